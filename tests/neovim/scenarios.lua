-- End-to-end scenarios for the infill Neovim plugin against the real infill-ls,
-- run by tests/test_neovim.py in one Neovim per session:
--   INFILL_SESSION=inline|menu|packaging INFILL_TEST_MODEL=<dir> INFILL_TEST_DIR=<dir> \
--   INFILL_RESULTS=<file.json> nvim --clean --headless --cmd 'set rtp^=clients/neovim' \
--     -S tests/neovim/scenarios.lua
-- Each scenario edits its own <scenario>.py in INFILL_TEST_DIR.

local H = dofile(vim.fs.joinpath(vim.fs.dirname(debug.getinfo(1, "S").source:sub(2)), "harness.lua"))

local ghost_text_ns = vim.api.nvim_create_namespace("nvim.lsp.inline_completion")

local EXAMPLE = { "def add(a, b):", "    return a + b" }

-- Each scenario starts by editing its own copy of the example file.
local function open_file(name)
  local path = vim.fs.joinpath(assert(vim.env.INFILL_TEST_DIR), name .. ".py")
  vim.fn.writefile(EXAMPLE, path)
  vim.cmd.edit(path)
end

local function infill_status()
  local client = require("infill").clients(0)[1]
  return client and require("infill").last_status[client.id]
end

local function wait_until_model_ready()
  H.wait_for("infill-ls to attach", function()
    return require("infill").clients(0)[1]
  end, 30000)
  H.wait_for("the model to load (infill/statusChanged ready)", function()
    local status = infill_status() or {}
    if status.state == "error" then
      error("infill-ls reports an error: " .. tostring(status.message))
    end
    return status.state == "ready"
  end, 60000)
end

-- The ghost text in the current buffer as lines of text, or nil when none shows.
local function ghost_text()
  local marks = vim.api.nvim_buf_get_extmarks(0, ghost_text_ns, 0, -1, { details = true })
  if #marks == 0 then
    return nil
  end
  local details = marks[1][4]
  local function join(chunks)
    local parts = {}
    for _, chunk in ipairs(chunks or {}) do
      table.insert(parts, chunk[1])
    end
    return table.concat(parts)
  end
  local lines = { join(details.virt_text) }
  for _, virt_line in ipairs(details.virt_lines or {}) do
    table.insert(lines, join(virt_line))
  end
  return lines
end

local function current_line()
  return vim.api.nvim_get_current_line()
end

-- Goes to the end of the file, opens a new line and types {text}; returns the
-- ghost text that appears.
local function type_and_wait_for_ghost_text(text)
  H.type("Go" .. text)
  local lines = H.wait_for("ghost text after typing", ghost_text, 20000)
  H.expect(table.concat(lines, "\n"):match("%S"), "the ghost text is blank: " .. vim.inspect(lines))
  return lines
end

local function notifications_matching(pattern)
  local found = {}
  for _, n in ipairs(H.notifications) do
    if n.message:match(pattern) then
      table.insert(found, n.message)
    end
  end
  return found
end

local scenarios = {}

-- Records the items of every answer the client receives, per method, so a test
-- can compare the buffer with what the server sent (the tiny model's text may
-- hold control characters that ghost text cannot show faithfully).
local last_items = {}
local function record_answers()
  local client = require("infill").clients(0)[1]
  if client.recorded_by_test then
    return
  end
  client.recorded_by_test = true
  local request = client.request
  client.request = function(self, method, params, handler, ...)
    if handler then
      local original_handler = handler
      handler = function(err, result, ...)
        last_items[method] = result and (result.items or result)
        return original_handler(err, result, ...)
      end
    end
    return request(self, method, params, handler, ...)
  end
end

-- The buffer lines that replacing LSP {range} (at the cursor when nil) with
-- {text} should produce; the typed text is ASCII, so LSP character offsets are
-- byte offsets here.
local function lines_after_edit(range, text)
  local lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  range = range or { start = { line = row - 1, character = col }, ["end"] = { line = row - 1, character = col } }
  local before = lines[range.start.line + 1]:sub(1, range.start.character)
  local after = lines[range["end"].line + 1]:sub(range["end"].character + 1)
  local replacement = vim.split(before .. text .. after, "\n", { plain = true })
  local result = vim.list_slice(lines, 1, range.start.line)
  vim.list_extend(result, replacement)
  vim.list_extend(result, lines, range["end"].line + 2)
  return result
end

-- Waits until the buffer holds {expected} lines.
local function wait_for_buffer(expected)
  local function buffer()
    return vim.api.nvim_buf_get_lines(0, 0, -1, false)
  end
  H.wait_for("the suggestion in the buffer", function()
    return vim.deep_equal(buffer(), expected)
  end, 5000, function()
    return ("expected %s, buffer has %s"):format(vim.inspect(expected), vim.inspect(buffer()))
  end)
end

-- Ghost text appears after typing; <Tab> inserts the suggestion.
function scenarios.accept()
  open_file("accept")
  wait_until_model_ready()
  H.expect(#notifications_matching("loading model") > 0, "no model-loading progress was reported with vim.notify")
  record_answers()
  type_and_wait_for_ghost_text("total = ")
  local item = assert(last_items["textDocument/inlineCompletion"][1], "ghost text but no recorded item")
  local expected = lines_after_edit(item.range, item.insertText)
  H.type("<Tab>")
  wait_for_buffer(expected)
  H.expect_equal(vim.api.nvim_get_mode().mode, "i", "mode after accepting")
end

-- <C-]> clears the ghost text and leaves the buffer as typed; with nothing
-- shown, <Tab> is an ordinary <Tab> again.
function scenarios.dismiss()
  open_file("dismiss")
  wait_until_model_ready()
  local typed = "value = "
  type_and_wait_for_ghost_text(typed)
  H.type("<C-]>")
  H.wait_for("the ghost text to go", function()
    return ghost_text() == nil
  end, 2000)
  H.expect_equal(current_line(), typed, "line after dismissing")
  H.type("<Tab>")
  -- Python's ftplugin sets 'expandtab': the <Tab> becomes spaces.
  H.expect(current_line():match("^value = %s+$"), "line after <Tab> with no suggestion shown: " .. current_line())
end

-- With the completion menu open, <Tab> belongs to the menu, not the ghost text.
function scenarios.tab_with_menu_open()
  open_file("tab_with_menu_open")
  wait_until_model_ready()
  vim.api.nvim_buf_set_lines(0, 0, 0, false, { "totally_first = 1", "totally_second = 2" })
  type_and_wait_for_ghost_text("result = tot")
  H.type("<C-n>")
  H.wait_for("the keyword completion menu", function()
    return vim.fn.pumvisible() == 1
  end, 2000)
  H.type("<Tab>")
  -- The menu inserted its first word; <Tab> then inserts indentation, no suggestion.
  H.expect(current_line():match("^result = totally_first%s+$"), "line after <Tab> with the menu open: " .. current_line())
end

-- <M-Right> takes one word of the suggestion; the rest is offered again.
function scenarios.accept_word()
  open_file("accept_word")
  wait_until_model_ready()
  local typed = "name = "
  local ghost = type_and_wait_for_ghost_text(typed)
  local word = ghost[1]:match("^%s*[%w_]+") or ghost[1]:match("^%s*[^%w_%s]+")
  H.expect(word, "the suggestion's first line has no word: " .. vim.inspect(ghost))
  H.type("<M-Right>")
  H.wait_for("one word of the suggestion in the buffer", function()
    return current_line() == typed .. word
  end, 5000)
end

-- <M-C-Right> takes the rest of the suggestion's first line.
function scenarios.accept_line()
  open_file("accept_line")
  wait_until_model_ready()
  record_answers()
  local typed = "line = "
  type_and_wait_for_ghost_text(typed)
  local item = assert(last_items["textDocument/inlineCompletion"][1], "ghost text but no recorded item")
  local expected = typed .. item.insertText:match("^[^\n]*")
  H.type("<M-C-Right>")
  H.wait_for("the suggestion's first line in the buffer", function()
    return current_line() == expected
  end, 5000, function()
    return ("expected %q, line is %q"):format(expected, current_line())
  end)
  H.expect_equal(vim.api.nvim_win_get_cursor(0)[2], #current_line(), "cursor column after accepting a line")
end

-- <M-]> and <M-[> cycle through the suggestions (the server sends one: 1/1).
function scenarios.cycle()
  open_file("cycle")
  wait_until_model_ready()
  type_and_wait_for_ghost_text("item = ")
  for _, key in ipairs({ "<M-]>", "<M-[>" }) do
    H.type(key)
    H.wait_for("the suggestion counter after " .. key, function()
      local ghost = ghost_text()
      return ghost and ghost[#ghost]:match("%(1/1%)$")
    end, 2000)
  end
end

-- A <Tab> mapped by another plugin (here a plain Lua mapping, as completion
-- plugins make) stays theirs, and :checkhealth infill says so.
function scenarios.keymap_conflict()
  local default_tab = vim.fn.maparg("<Tab>", "i", false, true)
  local function other_plugins_tab()
    vim.api.nvim_put({ "<other>" }, "c", false, true)
  end
  vim.keymap.set("i", "<Tab>", other_plugins_tab, { desc = "another plugin" })
  local ok, err = pcall(function()
    open_file("keymap_conflict")
    wait_until_model_ready()
    type_and_wait_for_ghost_text("other = ")
    H.type("<Tab>")
    H.expect_equal(current_line(), "other = <other>", "line after <Tab> owned by another plugin")
    -- infill's other keys are still mapped.
    H.wait_for("ghost text after <other>", ghost_text, 20000)
    H.type("<C-]>")
    H.wait_for("the ghost text to go", function()
      return ghost_text() == nil
    end, 2000)
    H.expect_equal(current_line(), "other = <other>", "line after dismissing")
    vim.cmd("checkhealth infill")
    local report = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
    H.expect(report:match("WARNING <Tab> is already mapped"), "no keymap warning in :checkhealth infill:\n" .. report)
  end)
  vim.keymap.del("i", "<Tab>")
  vim.fn.mapset("i", false, default_tab)
  H.expect(ok, err)
end

-- :InfillDisable stops suggestions, :InfillEnable brings them back, and
-- :InfillStatus reports the model, device, precision and latency.
function scenarios.commands()
  open_file("commands")
  wait_until_model_ready()
  type_and_wait_for_ghost_text("a = ")
  H.type("<Esc>")
  vim.cmd("InfillDisable")
  H.wait_for("the server to report disabled", function()
    return (infill_status() or {}).state == "disabled"
  end)
  H.expect_equal(require("infill").statusline(), "infill:off", "statusline while disabled")
  H.type("ob = ")
  H.sleep(1500) -- well past Neovim's 200 ms request delay and a tiny-model answer
  H.expect(ghost_text() == nil, "ghost text shown while disabled")
  H.type("<Esc>")

  vim.cmd("InfillEnable")
  H.wait_for("the server to report ready", function()
    return (infill_status() or {}).state == "ready"
  end)
  H.expect_equal(require("infill").statusline(), "infill:ready", "statusline when enabled again")
  type_and_wait_for_ghost_text("c = ")
  vim.cmd("InfillStatus")
  local status = H.wait_for("the :InfillStatus message", function()
    return notifications_matching("^infill%-ls ")[1]
  end)
  H.log(status)
  H.expect(status:find(vim.env.INFILL_TEST_MODEL, 1, true), "model missing from :InfillStatus")
  H.expect(status:match("device: cpu"), "device missing from :InfillStatus")
  H.expect(status:match("precision: %w"), "precision missing from :InfillStatus")
  H.expect(status:match("last latency: %d+ ms"), "latency missing from :InfillStatus")
end

-- :checkhealth infill finds the server, its version and the loaded model.
function scenarios.checkhealth()
  open_file("checkhealth")
  wait_until_model_ready()
  vim.cmd("checkhealth infill")
  local report = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
  H.log(report)
  for _, expected in ipairs({
    "OK Neovim 0%.1[2-9]",
    "OK found .*infill%-ls",
    "OK version: %S",
    "OK model .* loaded",
  }) do
    H.expect(report:match(expected), ("no line matching %q in :checkhealth infill"):format(expected))
  end
  H.expect(not report:match("ERROR"), "ERROR in :checkhealth infill")
  H.expect(not report:match("WARNING"), "WARNING in :checkhealth infill")
end

-- With `inline = false` the suggestion appears in the completion menu and
-- <C-y> inserts it.
function scenarios.completion_menu()
  open_file("completion_menu")
  wait_until_model_ready()
  record_answers()
  H.type("Gocount = ")
  H.wait_for("the completion menu with a suggestion", function()
    return vim.fn.pumvisible() == 1 and #vim.fn.complete_info({ "items" }).items > 0
  end, 20000)
  H.expect(ghost_text() == nil, "ghost text shown with inline = false")
  local item = assert(last_items["textDocument/completion"][1], "a menu but no recorded item")
  -- The plugin drops NUL bytes, which the tiny model sometimes emits.
  local expected = lines_after_edit(item.textEdit.range, (item.textEdit.newText:gsub("%z", "")))
  H.log("menu suggestion: " .. vim.inspect(item.textEdit.newText))
  H.type("<C-y>")
  wait_for_buffer(expected)
end

-- A model that cannot load is reported with vim.notify, by :InfillStatus and
-- by :checkhealth infill. (Changing the model also shows that settings reach
-- the running server.)
function scenarios.model_error()
  open_file("model_error")
  wait_until_model_ready()
  local missing = vim.fs.joinpath(vim.env.INFILL_TEST_DIR, "no-such-model")
  require("infill").update_settings({ model = missing })
  H.wait_for("an error notification", function()
    for _, n in ipairs(H.notifications) do
      if n.level == vim.log.levels.ERROR and n.message:find("no-such-model", 1, true) then
        return true
      end
    end
  end, 30000, function()
    return vim.inspect(H.notifications)
  end)
  H.wait_for("the server to report the error", function()
    return (infill_status() or {}).state == "error"
  end)
  vim.cmd("InfillStatus")
  local status = H.wait_for("the :InfillStatus message", function()
    return notifications_matching("^infill%-ls ")[1]
  end)
  H.expect(status:match(": error"), ":InfillStatus does not show the error state: " .. status)
  vim.cmd("checkhealth infill")
  local report = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
  H.expect(report:match("ERROR model [^\n]* did not load: [^\n]*no%-such%-model"), "no model error in :checkhealth infill:\n" .. report)
  vim.cmd("silent! messages clear") -- the error is expected here
end

-- Installed as a package (|packadd|): loading it defines the commands and
-- nothing else, and :help infill works.
function scenarios.packadd()
  H.expect(vim.fn.exists(":InfillStatus") == 0, "commands defined before packadd")
  vim.cmd.packadd("infill")
  for _, command in ipairs({ "InfillEnable", "InfillDisable", "InfillToggle", "InfillStatus" }) do
    H.expect(vim.fn.exists(":" .. command) == 2, command .. " missing after packadd")
  end
  H.expect(package.loaded["infill"] == nil, "plugin/infill.lua loaded the Lua module at startup")
  vim.cmd("InfillStatus") -- before setup(): says so, raises nothing
  H.expect(notifications_matching("not running")[1], "no 'not running' message from :InfillStatus before setup()")
  vim.cmd("helptags ALL")
  vim.cmd("help infill-keymaps")
  H.expect_equal(vim.fn.expand("%:t"), "infill.txt", "help file for infill-keymaps")
end

-- A server that is not installed: setup() warns, :checkhealth infill says
-- what to do.
function scenarios.missing_server()
  require("infill").setup({ cmd = { "no-such-infill-ls" } })
  H.expect(notifications_matching("no%-such%-infill%-ls not found")[1], "no warning from setup() about the missing server")
  vim.cmd("checkhealth infill")
  local report = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
  H.expect(report:match("ERROR no%-such%-infill%-ls not found"), "no ERROR in :checkhealth infill:\n" .. report)
  H.expect(report:match("pip install infill%-ls"), "no install advice in :checkhealth infill:\n" .. report)
  vim.cmd("silent! messages clear") -- the warning is expected here
end

-- Scenarios share a Neovim (and so one server start) per setup() they need.
local sessions = {
  inline = {
    setup = {},
    -- `commands` turns suggestions off and on again: it runs last.
    scenarios = {
      "accept",
      "dismiss",
      "tab_with_menu_open",
      "accept_word",
      "accept_line",
      "cycle",
      "checkhealth",
      -- Maps <Tab> globally for a while: after the scenarios that use <Tab>
      -- and the :checkhealth that must show no warning.
      "keymap_conflict",
      "commands",
      -- Leaves the server without a model: last.
      "model_error",
    },
  },
  menu = {
    setup = { inline = false, menu_autotrigger_ms = 100 },
    scenarios = { "completion_menu" },
  },
  -- The plugin is only on 'packpath' here, and setup() is not called.
  packaging = { scenarios = { "packadd", "missing_server" } },
}

local session = assert(sessions[vim.env.INFILL_SESSION], "set INFILL_SESSION to a session name")
if session.setup then
  require("infill").setup(vim.tbl_deep_extend("force", {
    settings = { model = assert(vim.env.INFILL_TEST_MODEL), device = "cpu" },
  }, session.setup))
end
local list = {}
for _, name in ipairs(session.scenarios) do
  table.insert(list, { name, assert(scenarios[name], name) })
end
H.run_all(list, assert(vim.env.INFILL_RESULTS), 240000)
