-- :checkhealth infill
local M = {}

local health = vim.health

local function check_neovim()
  health.start("infill: Neovim")
  local version = tostring(vim.version())
  if vim.lsp.inline_completion then
    health.ok(("Neovim %s: suggestions show as ghost text (vim.lsp.inline_completion)"):format(version))
  elseif vim.fn.has("nvim-0.10") == 1 then
    health.warn(
      ("Neovim %s: no vim.lsp.inline_completion, suggestions appear in the completion menu"):format(version),
      { "Neovim 0.12 or newer shows them as ghost text" }
    )
  else
    health.error(("Neovim %s is too old"):format(version), { "infill needs Neovim 0.10 or newer" })
  end

  local infill = require("infill")
  if not infill.config then
    health.warn("setup() has not been called", { 'Add require("infill").setup({}) to your config' })
    return
  end
  if vim.lsp.inline_completion and not infill.config.inline then
    health.info("`inline = false`: suggestions appear in the completion menu")
  end
  for bufnr, conflicts in pairs(require("infill.keymaps").conflicts) do
    for action, lhs in pairs(conflicts) do
      health.warn(
        ("%s is already mapped in insert mode (buffer %d); infill left it alone, so `%s` has no key"):format(
          lhs,
          bufnr,
          action
        ),
        { ("Set keymaps.%s to another key, or call require('infill').%s() from your own mapping"):format(action, action) }
      )
    end
  end
end

-- Runs `infill-ls --version`; returns the version text or nil and the error.
local function server_version(executable)
  local ok, result = pcall(function()
    return vim.system({ executable, "--version" }, { text = true }):wait(30000)
  end)
  if not ok then
    return nil, tostring(result)
  end
  if result.code ~= 0 then
    return nil, ("exit code %d: %s"):format(result.code, vim.trim(result.stderr or ""))
  end
  return vim.trim(result.stdout), nil
end

local function check_server_program()
  health.start("infill: server program")
  local config = require("infill").config
  local cmd = config and config.cmd or { "infill-ls" }
  local executable = cmd[1]
  if vim.fn.executable(executable) == 0 then
    health.error(("%s not found"):format(executable), {
      "Install the server: pip install infill-ls",
      "or set `cmd` in setup() to its full path",
    })
    return
  end
  health.ok(("found %s"):format(vim.fn.exepath(executable)))
  local version, err = server_version(executable)
  if version then
    health.ok(("version: %s"):format(version))
  else
    health.error(("%s --version failed: %s"):format(executable, err))
  end
end

local function check_running_servers()
  health.start("infill: running server")
  local infill = require("infill")
  local clients = infill.clients()
  if #clients == 0 then
    health.info("no infill-ls is running; open a file to start it, then run :checkhealth infill again")
    return
  end
  for _, client in ipairs(clients) do
    local response = infill.client_call(client, "request_sync", "infill/status", vim.empty_dict(), 5000)
    local status = response and response.result
    if not status then
      local err = response and response.err
      health.error(("client %d: infill/status failed: %s"):format(client.id, err and err.message or "no answer"))
    else
      local summary = "model " .. infill.describe_model(status)
      if status.state == "ready" then
        health.ok(("%s loaded, server %s"):format(summary, tostring(status.version)))
      elseif status.state == "loading" then
        health.warn(("%s is still loading"):format(summary))
      elseif status.state == "disabled" then
        health.warn("suggestions are disabled", { ":InfillEnable turns them on" })
      elseif status.state == "error" then
        health.error(("%s did not load: %s"):format(summary, tostring(status.message)), {
          "Check `settings.model` (a Hugging Face id or a local folder), `device` and `quantization`",
          "The server's log is in Neovim's LSP log: " .. vim.lsp.log.get_filename(),
        })
      else
        health.error(("unknown state %s: %s"):format(tostring(status.state), tostring(status.message)))
      end
    end
  end
end

function M.check()
  check_neovim()
  check_server_program()
  check_running_servers()
end

return M
