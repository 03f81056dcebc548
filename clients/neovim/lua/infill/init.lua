-- infill.nvim: inline code suggestions from the infill-ls language server.
--
-- setup() registers the server with Neovim's own LSP client; suggestions are
-- shown by Neovim's built-in inline completion (0.12+) or, on older versions
-- (or with `inline = false`), in the ordinary completion menu.

local M = {}

-- The name of the LSP client (and of the `vim.lsp.config` entry).
M.client_name = "infill"

local defaults = {
  -- How to start the server; it speaks LSP over stdio.
  cmd = { "infill-ls" },
  -- Filetypes to attach to; nil attaches to every buffer that has a file.
  filetypes = nil,
  -- Files that mark the project root, sent to the server as the workspace folder.
  root_markers = { ".git" },
  -- The server's `infill` settings section: model, quantization, device,
  -- maxNewTokens, contextTokens, debounceMs, multiline, timeoutMs, enable, ...
  settings = {},
  -- Ghost text through vim.lsp.inline_completion (Neovim 0.12+). When false,
  -- or when Neovim is older, suggestions appear in the completion menu instead.
  inline = true,
  -- Completion-menu mode only: open the menu by itself after a pause in typing
  -- (milliseconds), or false to open it only through require("infill").complete().
  menu_autotrigger_ms = 300,
  -- Report model-loading progress with vim.notify.
  progress = true,
  -- Insert-mode keys for the ghost text; set one to false to leave it unmapped.
  -- Each falls back to the key's ordinary meaning when there is nothing to act on.
  keymaps = {
    accept = "<Tab>",
    accept_word = "<M-Right>",
    accept_line = "<M-C-Right>",
    next = "<M-]>",
    prev = "<M-[>",
    dismiss = "<C-]>",
  },
}

M.config = nil -- the merged configuration once setup() has run
M.enabled = true -- :InfillEnable / :InfillDisable
M.last_status = {} -- client id -> last `infill/statusChanged` payload

local has_inline = vim.lsp.inline_completion ~= nil -- Neovim 0.12
local has_lsp_config = vim.fn.has("nvim-0.11") == 1 -- vim.lsp.config / vim.lsp.enable

--- Calls {client}'s {method}: with `:` from Neovim 0.11 on, with `.` before.
function M.client_call(client, method, ...)
  if has_lsp_config then
    return client[method](client, ...)
  end
  return client[method](...)
end
local client_call = M.client_call

local function notify(message, level)
  vim.notify("infill: " .. message, level or vim.log.levels.INFO)
end

--- Whether ghost text (rather than the completion menu) is in use.
function M.uses_inline()
  return has_inline and M.config ~= nil and M.config.inline
end

--- The running infill-ls clients, those attached to {bufnr} when given.
function M.clients(bufnr)
  return vim.lsp.get_clients({ name = M.client_name, bufnr = bufnr })
end

-- The settings as sent to the server. An empty Lua table would be encoded as a
-- JSON array, so `enable` is always present.
local function server_settings()
  local settings = vim.deepcopy(M.config.settings)
  settings.enable = M.enabled
  return settings
end

---------------------------------------------------------------------------
-- Attaching to buffers
---------------------------------------------------------------------------

-- Turns suggestions on or off in one buffer, according to M.enabled.
-- (In completion-menu mode the menu checks M.enabled before asking.)
local function apply_enabled(bufnr)
  if M.uses_inline() then
    vim.lsp.inline_completion.enable(M.enabled, { bufnr = bufnr })
  end
end

-- The client that should answer for {bufnr} now, if suggestions are on.
local function active_client(bufnr)
  return M.enabled and M.clients(bufnr)[1] or nil
end

local function on_attach(bufnr)
  if M.uses_inline() then
    apply_enabled(bufnr)
    require("infill.keymaps").map(bufnr, M.config.keymaps)
  else
    require("infill.menu").attach(bufnr, M.config.menu_autotrigger_ms, active_client)
  end
end

---------------------------------------------------------------------------
-- Server messages
---------------------------------------------------------------------------

local function on_status_changed(_, status, ctx)
  M.last_status[ctx.client_id] = status
  vim.api.nvim_exec_autocmds("User", { pattern = "InfillStatusChanged", data = status, modeline = false })
end

local progress_titles = {} -- progress token -> title of its begin message

local function on_progress(args)
  local client = vim.lsp.get_client_by_id(args.data.client_id)
  if not client or client.name ~= M.client_name or not M.config.progress then
    return
  end
  local token, value = args.data.params.token, args.data.params.value
  if type(value) ~= "table" then
    return
  end
  if value.kind == "begin" then
    progress_titles[token] = value.title or "infill-ls"
  end
  local title = progress_titles[token] or "infill-ls"
  local text = title .. (value.message and (": " .. value.message) or "")
  if value.percentage then
    text = ("%s (%d%%)"):format(text, value.percentage)
  end
  if value.kind == "report" then
    -- Progress steps are transient: echo them without filling :messages.
    vim.api.nvim_echo({ { text } }, false, {})
  else
    vim.notify(text, vim.log.levels.INFO)
  end
  if value.kind == "end" then
    progress_titles[token] = nil
  end
end

-- Only files with a filetype: not the empty start-up buffer, scratch or
-- special buffers (vim.lsp.enable would otherwise start a server for them).
local function wants_buffer(bufnr)
  return vim.bo[bufnr].buftype == "" and vim.bo[bufnr].filetype ~= "" and vim.api.nvim_buf_get_name(bufnr) ~= ""
end

local function client_config()
  local settings = server_settings()
  return {
    name = M.client_name,
    cmd = M.config.cmd,
    filetypes = M.config.filetypes,
    root_dir = function(bufnr, on_dir)
      if wants_buffer(bufnr) then
        on_dir(vim.fs.root(bufnr, M.config.root_markers))
      end
    end,
    init_options = settings,
    -- Answers the server's `workspace/configuration` requests for section "infill".
    settings = { infill = settings },
    handlers = { ["infill/statusChanged"] = on_status_changed },
  }
end

-- Neovim 0.10 has no vim.lsp.enable: start the client from FileType events.
local function start_on_filetype(bufnr)
  local filetypes = M.config.filetypes
  if filetypes and not vim.tbl_contains(filetypes, vim.bo[bufnr].filetype) then
    return
  end
  local config = client_config()
  if wants_buffer(bufnr) then
    config.root_dir = vim.fs.root(bufnr, M.config.root_markers)
    vim.lsp.start(config, { bufnr = bufnr })
  end
end

---------------------------------------------------------------------------
-- Public API
---------------------------------------------------------------------------

--- Configures and starts infill-ls for matching buffers. See |infill-setup|.
function M.setup(opts)
  if vim.fn.has("nvim-0.10") == 0 then
    notify("needs Neovim 0.10 or newer", vim.log.levels.ERROR)
    return
  end
  M.config = vim.tbl_deep_extend("force", vim.deepcopy(defaults), opts or {})
  require("infill.keymaps").conflicts = {}
  if opts and opts.keymaps == false then
    M.config.keymaps = {}
  end
  if M.config.settings.enable ~= nil then
    M.enabled = M.config.settings.enable
  end
  if vim.fn.executable(M.config.cmd[1]) == 0 then
    notify(("%s not found; install it (pip install infill-ls) or set `cmd`. See :checkhealth infill"):format(
      M.config.cmd[1]
    ), vim.log.levels.WARN)
  end

  -- The commands live in plugin/infill.lua; plugin managers that put the plugin
  -- on 'runtimepath' late may not have sourced it.
  if not vim.g.loaded_infill then
    vim.cmd.runtime("plugin/infill.lua")
  end

  local group = vim.api.nvim_create_augroup("infill", { clear = true })
  vim.api.nvim_create_autocmd("LspAttach", {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == M.client_name then
        on_attach(args.buf)
      end
    end,
  })
  vim.api.nvim_create_autocmd("LspProgress", { group = group, callback = on_progress })

  if has_lsp_config then
    vim.lsp.config[M.client_name] = client_config()
    vim.lsp.enable(M.client_name)
  else
    vim.api.nvim_create_autocmd("FileType", {
      group = group,
      callback = function(args)
        start_on_filetype(args.buf)
      end,
    })
    for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
      if vim.api.nvim_buf_is_loaded(bufnr) and vim.bo[bufnr].filetype ~= "" then
        start_on_filetype(bufnr)
      end
    end
  end
end

-- Sends the current settings to the running servers (they pull them with
-- workspace/configuration) and to the ones that start later.
local function push_settings()
  if has_lsp_config then
    vim.lsp.config[M.client_name] = client_config()
  end
  for _, client in ipairs(M.clients()) do
    client.settings = { infill = server_settings() }
    client_call(client, "notify", "workspace/didChangeConfiguration", { settings = client.settings })
  end
end

--- Changes some of the server's settings (|infill-settings|), e.g.
--- `update_settings({ model = "bigcode/starcoder2-7b" })`; a new model loads at once.
function M.update_settings(changes)
  M.config.settings = vim.tbl_extend("force", M.config.settings, changes)
  push_settings()
end

--- Turns suggestions on (true) or off (false) everywhere.
function M.set_enabled(enabled)
  M.enabled = enabled
  if M.config then
    push_settings()
  end
  for _, client in ipairs(M.clients()) do
    for bufnr in pairs(client.attached_buffers) do
      apply_enabled(bufnr)
    end
  end
  notify(enabled and "suggestions on" or "suggestions off")
end

function M.enable()
  M.set_enabled(true)
end

function M.disable()
  M.set_enabled(false)
end

function M.toggle()
  M.set_enabled(not M.enabled)
end

--- Asks a running server for its `infill/status`; calls {callback}(err, status).
function M.request_status(callback)
  local client = M.clients(vim.api.nvim_get_current_buf())[1] or M.clients()[1]
  if not client then
    callback("infill-ls is not running (open a file to start it)", nil)
    return
  end
  client_call(client, "request", "infill/status", vim.empty_dict(), function(err, status)
    callback(err and (err.message or vim.inspect(err)), status)
  end)
end

-- A status field for people: "-" when the server has no value (nil, null or "").
local function shown(value)
  if value == nil or value == vim.NIL or value == "" then
    return "-"
  end
  return tostring(value)
end

--- "MODEL on DEVICE (PRECISION)" from an `infill/status` object.
function M.describe_model(status)
  return ("%s on %s (%s)"):format(shown(status.model), shown(status.device), shown(status.precision))
end

--- Formats an `infill/status` object for people.
function M.format_status(status)
  local latency = type(status.lastLatencyMs) == "number" and ("%.0f ms"):format(status.lastLatencyMs) or "-"
  local lines = {
    ("infill-ls %s: %s%s"):format(shown(status.version), shown(status.state), M.enabled and "" or " (off in Neovim)"),
    ("model: %s"):format(shown(status.model)),
    ("device: %s, precision: %s"):format(shown(status.device), shown(status.precision)),
    ("last latency: %s"):format(latency),
    ("shown as: %s"):format(M.uses_inline() and "ghost text" or "completion menu"),
  }
  if shown(status.message) ~= "-" then
    table.insert(lines, status.message)
  end
  return table.concat(lines, "\n")
end

--- :InfillStatus
function M.show_status()
  M.request_status(function(err, status)
    if err then
      notify(err, vim.log.levels.WARN)
    else
      vim.notify(M.format_status(status), vim.log.levels.INFO)
    end
  end)
end

--- A short text for a statusline, from the last status the server sent.
function M.statusline()
  local client = M.clients(vim.api.nvim_get_current_buf())[1]
  local status = client and M.last_status[client.id]
  if not status then
    return ""
  end
  return "infill:" .. (M.enabled and status.state or "off")
end

--- Asks for a suggestion now and shows it in the completion menu.
function M.complete()
  local client = active_client(vim.api.nvim_get_current_buf())
  if client then
    require("infill.menu").trigger(client)
  end
end

-- Ghost-text actions, for use in your own mappings (see |infill-keymaps|);
-- each returns true when it acted, and false in completion-menu mode.
for _, action in ipairs({ "accept", "accept_word", "accept_line", "next", "prev", "dismiss" }) do
  M[action] = function()
    return M.uses_inline() and require("infill.keymaps")[action]() or false
  end
end

return M
