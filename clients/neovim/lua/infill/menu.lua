-- Suggestions in the completion menu, for Neovim without
-- vim.lsp.inline_completion (0.10, 0.11) or with `inline = false`.
--
-- Asks infill-ls for textDocument/completion and shows the answer with
-- complete(). Neovim's own LSP completion is not used because it inserts only
-- the first word of a plain-text item; here <C-y> inserts the whole suggestion,
-- lines after the first included.

local M = {}

-- Byte column of an LSP {character} offset in {line}.
local function byte_col(line, character, encoding)
  if encoding == "utf-8" then
    return character
  end
  if vim.fn.has("nvim-0.11") == 1 then
    return vim.str_byteindex(line, encoding, character, false)
  end
  return vim.str_byteindex(line, character, encoding == "utf-16")
end

-- complete() items from a textDocument/completion answer: the menu inserts the
-- first line; the other lines are kept in user_data for CompleteDone.
local function menu_items(result, line, encoding)
  local start_col, items = nil, {}
  for _, item in ipairs(result and (result.items or result) or {}) do
    -- complete() cannot take NUL bytes; a suggestion should never hold them.
    local text = (item.textEdit and item.textEdit.newText or item.insertText or item.label):gsub("%z", "")
    local start = item.textEdit and (item.textEdit.range or item.textEdit.insert).start
    local col = start and byte_col(line, start.character, encoding)
    -- complete() takes one start column: keep the items that share the first one.
    start_col = start_col or col
    if col == start_col then
      local lines = vim.split(text, "\n", { plain = true })
      table.insert(items, {
        word = lines[1],
        abbr = (item.label:gsub("%z", "")),
        menu = "[infill]",
        info = #lines > 1 and text or nil,
        icase = 1,
        dup = 1,
        user_data = { infill = { more_lines = vim.list_slice(lines, 2) } },
      })
    end
  end
  return start_col, items
end

-- The menu of suggestions must not insert text before the user picks it, and
-- must show a single item: 'completeopt' gets "menuone,noinsert" while it is open.
local saved_completeopt

local function open(start_col, items)
  saved_completeopt = saved_completeopt or vim.o.completeopt
  local options = vim.split(vim.o.completeopt, ",", { trimempty = true })
  for _, needed in ipairs({ "menuone", "noinsert" }) do
    if not vim.tbl_contains(options, needed) then
      table.insert(options, needed)
    end
  end
  vim.o.completeopt = table.concat(options, ",")
  vim.fn.complete(start_col + 1, items)
end

--- Asks {client} for suggestions at the cursor and opens the menu with them.
function M.trigger(client)
  local bufnr = vim.api.nvim_get_current_buf()
  local tick = vim.b[bufnr].changedtick
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  require("infill").client_call(client, "request", "textDocument/completion", params, function(err, result)
    -- Drop an answer that arrives after the user typed on or left insert mode.
    if err or vim.b[bufnr].changedtick ~= tick or vim.fn.mode() ~= "i" or vim.fn.pumvisible() == 1 then
      return
    end
    local line = vim.api.nvim_get_current_line()
    local start_col, items = menu_items(result, line, client.offset_encoding)
    if #items > 0 then
      open(start_col or vim.api.nvim_win_get_cursor(0)[2], items)
    end
  end, bufnr)
end

-- After the menu closes: restore 'completeopt' and, when a suggestion was
-- inserted, add its remaining lines.
local function on_complete_done()
  if saved_completeopt then
    vim.o.completeopt = saved_completeopt
    saved_completeopt = nil
  end
  local completed = vim.v.completed_item
  local data = type(completed) == "table" and type(completed.user_data) == "table" and completed.user_data.infill
  if not data or #data.more_lines == 0 then
    return
  end
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  local before_cursor = vim.api.nvim_get_current_line():sub(1, col)
  -- <C-e> removes the inserted word again; only a kept word is followed by the rest.
  if before_cursor:sub(-#completed.word) ~= completed.word then
    return
  end
  local bufnr = vim.api.nvim_get_current_buf()
  vim.schedule(function()
    local lines = { "" }
    vim.list_extend(lines, data.more_lines)
    vim.api.nvim_buf_set_text(bufnr, row - 1, col, row - 1, col, lines)
    vim.api.nvim_win_set_cursor(0, { row + #data.more_lines, #lines[#lines] })
  end)
end

--- Sets buffer {bufnr} up for menu suggestions: when {delay_ms} is a number,
--- the menu opens by itself after that long without typing.
function M.attach(bufnr, delay_ms, should_trigger)
  local group = vim.api.nvim_create_augroup("infill.menu." .. bufnr, { clear = true })
  vim.api.nvim_create_autocmd("CompleteDone", { group = group, buffer = bufnr, callback = on_complete_done })
  if not delay_ms then
    return
  end
  local timer = vim.uv.new_timer()
  vim.api.nvim_create_autocmd("TextChangedI", {
    group = group,
    buffer = bufnr,
    callback = function()
      timer:stop()
      timer:start(delay_ms, 0, vim.schedule_wrap(function()
        local client = should_trigger(bufnr)
        if client and vim.api.nvim_get_current_buf() == bufnr and vim.fn.mode() == "i" then
          M.trigger(client)
        end
      end))
    end,
  })
  vim.api.nvim_create_autocmd("BufWipeout", {
    group = group,
    buffer = bufnr,
    callback = function()
      timer:close()
    end,
  })
end

return M
