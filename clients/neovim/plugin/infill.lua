-- Commands only: the plugin itself loads when they are used or setup() runs.
if vim.g.loaded_infill then
  return
end
vim.g.loaded_infill = true

local function command(name, action, description)
  vim.api.nvim_create_user_command(name, function()
    require("infill")[action]()
  end, { desc = description })
end

command("InfillEnable", "enable", "infill: turn suggestions on")
command("InfillDisable", "disable", "infill: turn suggestions off")
command("InfillToggle", "toggle", "infill: turn suggestions on or off")
command("InfillStatus", "show_status", "infill: show the model, device, precision and last latency")
