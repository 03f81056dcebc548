-- Drives a headless Neovim through test scenarios (see scenarios.lua).
--
-- A scenario is a function run in a coroutine: it types with nvim_input and
-- waits with H.wait_for, which yields to Neovim's event loop so typed keys,
-- autocommands and LSP messages are processed the way they are for a user.
-- H.run_all runs scenarios one after another in one Neovim (one server start),
-- writes each one's outcome to a JSON file as it goes, and exits 0 when all passed.

local H = {}

H.notifications = {} -- every vim.notify message, in order

local original_notify = vim.notify
vim.notify = function(message, level, opts)
  table.insert(H.notifications, { message = message, level = level or vim.log.levels.INFO })
  io.stdout:write(("[notify %s] %s\n"):format(level or vim.log.levels.INFO, message))
  return original_notify(message, level, opts)
end

function H.log(message)
  io.stdout:write(message .. "\n")
end

local scenario_co

local function diagnostics()
  local buffer = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
  local messages = vim.api.nvim_exec2("messages", { output = true }).output
  return ("mode: %s\ncurrent buffer:\n%s\n:messages:\n%s\n"):format(vim.api.nvim_get_mode().mode, buffer, messages)
end

local function resume()
  local ok, err = coroutine.resume(scenario_co)
  if not ok then
    io.stderr:write("harness error: " .. debug.traceback(scenario_co, tostring(err)) .. "\n")
    vim.cmd("cquit 2")
  end
end

--- Lets Neovim run for {ms} milliseconds.
function H.sleep(ms)
  vim.defer_fn(resume, ms)
  coroutine.yield()
end

--- Waits until {condition}() returns a truthy value, and returns it.
--- An error raised by {condition} fails the scenario at once. On a timeout the
--- error carries {explain}() when given, to show what was there instead.
function H.wait_for(what, condition, timeout_ms, explain)
  local deadline = vim.uv.hrtime() + (timeout_ms or 10000) * 1e6
  while true do
    local value = condition()
    if value then
      return value
    end
    if vim.uv.hrtime() > deadline then
      error(("timed out waiting for %s%s"):format(what, explain and (": " .. explain()) or ""), 2)
    end
    H.sleep(20)
  end
end

function H.expect(condition, message)
  if not condition then
    error(message, 2)
  end
end

function H.expect_equal(actual, expected, what)
  if actual ~= expected then
    error(("%s: expected %s, got %s"):format(what, vim.inspect(expected), vim.inspect(actual)), 2)
  end
end

--- Types {keys} (with <> notation) as a user would.
function H.type(keys)
  vim.api.nvim_input(keys)
  H.wait_for("Neovim to take the typed keys", function()
    return not vim.api.nvim_get_mode().blocking and vim.fn.getchar(1) == 0
  end)
end

local function write_results(path, results)
  local file = assert(io.open(path, "w"))
  file:write(vim.json.encode(results))
  file:close()
end

-- Leaves insert mode and drops pending keys, so a failed scenario does not
-- leak into the next one.
local function reset()
  vim.api.nvim_input("<C-\\><C-n>")
  H.sleep(50)
  vim.cmd("silent! tabonly | silent! only")
  vim.cmd("silent! messages clear")
  H.notifications = {}
end

--- Runs {scenarios} (a list of { name, function }) in order, records
--- "passed" or the failure for each in {results_path}, then exits Neovim.
--- Gives up (exit 1) after {timeout_ms} in all.
function H.run_all(scenarios, results_path, timeout_ms)
  local results = {}
  scenario_co = coroutine.create(function()
    for _, scenario in ipairs(scenarios) do
      local name, run = scenario[1], scenario[2]
      H.log("--- scenario " .. name)
      local started = vim.uv.hrtime()
      local ok, err = xpcall(run, debug.traceback)
      local elapsed_ms = (vim.uv.hrtime() - started) / 1e6
      -- Errors in callbacks (the plugin's or Neovim's) only reach :messages.
      local messages = vim.api.nvim_exec2("messages", { output = true }).output
      if ok and (messages:match("E%d+:") or messages:match("[Ee]rror")) then
        ok, err = false, "errors in :messages"
      end
      results[name] = ok and "passed" or (tostring(err) .. "\n" .. diagnostics())
      H.log(("%s (%.0f ms)"):format(ok and "passed" or ("FAILED: " .. results[name]), elapsed_ms))
      write_results(results_path, results)
      reset()
    end
    local all_passed = vim.iter(vim.tbl_values(results)):all(function(r)
      return r == "passed"
    end)
    vim.cmd(all_passed and "qall!" or "cquit 1")
  end)
  vim.defer_fn(function()
    if coroutine.status(scenario_co) ~= "dead" then
      io.stderr:write(("gave up after %d ms\n%s"):format(timeout_ms, diagnostics()))
      vim.cmd("cquit 1")
    end
  end, timeout_ms)
  vim.schedule(resume)
end

return H
