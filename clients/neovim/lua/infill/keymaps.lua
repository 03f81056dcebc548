-- Actions on the ghost text shown by vim.lsp.inline_completion, and the
-- buffer-local insert-mode keys bound to them.
--
-- Every action returns true when it acted. The mappings are <expr> mappings
-- that fall back to the key's ordinary meaning otherwise, so <Tab> still
-- inserts a tab (or drives a visible completion menu) when there is no ghost text.

local M = {}

local ghost_text_ns = vim.api.nvim_create_namespace("nvim.lsp.inline_completion")

-- Mappings skipped because the key was already mapped: bufnr -> { [action] = lhs }.
M.conflicts = {}

--- Whether ghost text is shown in the current buffer.
function M.visible()
  return #vim.api.nvim_buf_get_extmarks(0, ghost_text_ns, 0, -1, { limit = 1 }) > 0
end

function M.accept()
  if vim.fn.pumvisible() == 1 then
    return false -- the completion menu has the key
  end
  return vim.lsp.inline_completion.get()
end

function M.dismiss()
  -- Taking the item with a handler that does nothing clears it.
  return vim.lsp.inline_completion.get({ on_accept = function() end })
end

local function select(count)
  if not M.visible() then
    return false
  end
  -- Mappings run under textlock; redraw the ghost text right after.
  vim.schedule(function()
    vim.lsp.inline_completion.select({ count = count })
  end)
  return true
end

function M.next()
  return select(1)
end

function M.prev()
  return select(-1)
end

-- The part of {item} that is not in the buffer yet: the item replaces its
-- range, whose start may lie before the cursor (the server echoes what was
-- typed). Nil when the item is a snippet or does not extend the typed text.
local function untyped_text(item, bufnr, row, col)
  local text = item.insert_text
  if type(text) ~= "string" then
    return nil
  end
  if item.range then
    local start = item.range.start
    if start.row > row or (start.row == row and start.col > col) then
      return nil
    end
    local typed = table.concat(vim.api.nvim_buf_get_text(bufnr, start.row, start.col, row, col, {}), "\n")
    if text:sub(1, #typed) ~= typed then
      return nil
    end
    text = text:sub(#typed + 1)
  end
  return text
end

local function first_word(text)
  return text:match("^%s*[%w_]+") or text:match("^%s*[^%w_%s]+") or text
end

local function first_line(text)
  -- At the end of a line the suggestion starts with a newline: take the next line.
  local line_break, line = text:match("^(\n?)([^\n]*)")
  return line_break .. line
end

-- Inserts {text} at the cursor and puts the cursor after it.
local function insert_at_cursor(bufnr, row, col, text)
  local lines = vim.split(text, "\n", { plain = true })
  vim.api.nvim_buf_set_text(bufnr, row, col, row, col, lines)
  local last_col = (#lines == 1 and col or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { row + #lines, last_col })
end

-- Replaces the item's range with its whole text, as Neovim's own accept does.
local function insert_whole(bufnr, item, row, col)
  local range = item.range
  if not range then
    return insert_at_cursor(bufnr, row, col, item.insert_text)
  end
  local lines = vim.split(item.insert_text, "\n", { plain = true })
  vim.api.nvim_buf_set_text(bufnr, range.start.row, range.start.col, range.end_.row, range.end_.col, lines)
  local last_col = (#lines == 1 and range.start.col or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { range.start.row + #lines, last_col })
end

-- Accepts the first piece of the suggestion; Neovim then asks for the rest.
local function accept_part(take)
  if vim.fn.pumvisible() == 1 then
    return false
  end
  return vim.lsp.inline_completion.get({
    on_accept = function(item)
      local bufnr = vim.api.nvim_get_current_buf()
      local row, col = unpack(vim.api.nvim_win_get_cursor(0))
      row = row - 1
      local rest = untyped_text(item, bufnr, row, col)
      local part = rest and take(rest)
      if not part or part == rest then
        insert_whole(bufnr, item, row, col)
      else
        insert_at_cursor(bufnr, row, col, part)
      end
    end,
  })
end

function M.accept_word()
  return accept_part(first_word)
end

function M.accept_line()
  return accept_part(first_line)
end

local descriptions = {
  accept = "infill: accept the suggestion",
  accept_word = "infill: accept the next word of the suggestion",
  accept_line = "infill: accept the next line of the suggestion",
  next = "infill: next suggestion",
  prev = "infill: previous suggestion",
  dismiss = "infill: dismiss the suggestion",
}

-- What {lhs} should do in buffer {bufnr} when there is no ghost text to act
-- on: a function returning the keys to feed, or nil when another mapping owns
-- the key. An existing <expr> mapping with a Lua callback (like Neovim's own
-- <Tab> that jumps in snippets) keeps working: it is called.
local function fallback_for(existing, lhs)
  if vim.tbl_isempty(existing) then
    return function()
      return lhs
    end
  end
  if existing.expr == 1 and existing.noremap == 1 and existing.callback then
    return existing.callback
  end
  return nil
end

--- Maps the keys in {keymaps} (action -> lhs or false) in buffer {bufnr}.
--- A key another mapping owns is left alone and reported by :checkhealth infill.
function M.map(bufnr, keymaps)
  for action, lhs in pairs(keymaps) do
    local existing = lhs
      and vim.api.nvim_buf_call(bufnr, function()
        return vim.fn.maparg(lhs, "i", false, true)
      end)
    local ours = existing and (existing.desc or ""):match("^infill: ")
    if existing and descriptions[action] and not ours then
      local fallback = fallback_for(existing, lhs)
      if fallback then
        vim.keymap.set("i", lhs, function()
          return M[action]() and "" or fallback()
        end, { buffer = bufnr, expr = true, desc = descriptions[action] })
      else
        M.conflicts[bufnr] = M.conflicts[bufnr] or {}
        M.conflicts[bufnr][action] = lhs
      end
    end
  end
end

return M
