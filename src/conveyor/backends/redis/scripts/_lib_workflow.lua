-- _lib_workflow.lua: the library's part after _lib.lua and _lib_jobs.lua (whose rules it
-- follows) and before _lib_worker.lua (whose apply_outcome calls it): workflows, i.e.
-- dependencies between jobs and batches with a completion callback (the contract is the
-- "Workflows" block of conveyor.backends.records).
--
-- Storage (see keys.py): a job enqueued with dependencies has P deps:<id> (their ids;
-- field has_deps "1"). While some are unfinished it is stored `waiting` with no
-- wait_token, in no structure but its state index (never in P wait, so resume_due and
-- complete_token never see it), with dep_wait = how many are unfinished, and its id is in
-- P dnts:<dep> of each of those, whose hash carries has_dependents "1". A batch is
-- P batch:<id>; its members carry batch_id, its callback job batch_of.
--
-- Exactly once: every transition into completed, failed (final) or cancelled, and the
-- deletion of an unfinished job, calls workflow_finished in the same script when the job
-- has dependents or a batch (fields its transition reads with its own HMGET, so a plain
-- job pays nothing more). It takes the job's dependent set (deleting it, so a job retried
-- and ended again finds none) and resolves each dependent that still waits on
-- dependencies (dep_wait > 0; every way out of that wait clears it); a member is counted
-- in its batch once (HSETNX batch_counted), and the count that reaches the total marks the
-- batch done and stores its callback job, in that same script. Scripts never interleave,
-- so of concurrent completions each sees what the others did.

-- waiting on dependencies -> queued (scheduled while its run_at is after `at`), with a
-- `resumed` event {"reason": "dependencies"}; d has the fields workflow_finished reads
local function release_dependent(id, d, at)
  if tonumber(d.run_at) > tonumber(at) then
    redis.call("HSET", K.job(id), "state", "scheduled", "dep_wait", "")
    move_state(id, d.channel, "waiting", "scheduled")
    zadd_later(K.due, d.run_at, id)
  else
    redis.call("HSET", K.job(id), "state", "queued", "dep_wait", "")
    move_state(id, d.channel, "waiting", "queued")
    place_queued(id, d.channel, d.priority, d.ord, d.group_key, d.run_at)
  end
  emit(id, "resumed", d.name, d.tenant, d.attempts, at, '{"reason": "dependencies"}')
end

-- waiting on dependencies -> cancelled, because dependency `dep` failed, was cancelled or
-- was deleted; d needs channel, name, tenant, attempts
local function cancel_dependent(id, d, at, dep)
  redis.call("HSET", K.job(id), "state", "cancelled", "finished_at", at, "dep_wait", "")
  move_state(id, d.channel, "waiting", "cancelled")
  zadd_later(K.done("cancelled"), at, id)
  emit(id, "cancelled", d.name, d.tenant, d.attempts, at,
       '{"reason": "dependency_failed", "dependency": ' .. dep .. '}')
end

-- options JSON text with "batch": b added last (so it wins over a "batch" already there);
-- the rest of the text is kept as it is
local function with_batch(options, b)
  local body = options and string.match(options, "^%s*{(.*)}%s*$")
  if not body or not string.find(body, "%S") then return '{"batch": ' .. b .. "}" end
  return "{" .. body .. ', "batch": ' .. b .. "}"
end

-- a running batch whose members all finished becomes done, and its callback job (if any)
-- is stored with the counts in its options
local function batch_settle(bid, at)
  local v = redis.call("HMGET", K.batch(bid), "total", "completed", "failed", "cancelled",
                       "callback", "state")
  local total, c, f, x = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0,
                         tonumber(v[4]) or 0
  if v[6] ~= "running" or c + f + x < total then return end
  local h = {"state", "done"}
  local cb = nz(v[5])
  if cb then
    local a = cjson.decode(cb)  -- the 15 values of one job of enqueue.lua
    local counts = cjson.encode({id = bid, total = total, completed = c, failed = f,
                                 cancelled = x})
    a[9] = with_batch(nz(a[9]), counts)
    if a[3] == "scheduled" and tonumber(a[4]) <= tonumber(at) then a[3] = "queued" end
    local id, created = enqueue_one(a, 1, at)
    if created == 1 then redis.call("HSET", K.job(id), "batch_of", bid) end
    h[#h + 1] = "callback_job_id"
    h[#h + 1] = id
  end
  redis.call("HSET", K.batch(bid), unpack(h))
end

-- count member `id`'s end (completed | failed | cancelled) in batch `bid`, once
local function batch_count(id, bid, state, at)
  if redis.call("HSETNX", K.job(id), "batch_counted", "1") == 0 then return end
  local key = K.batch(bid)
  if redis.call("HGET", key, "state") ~= "running" then return end  -- gone, or done
  redis.call("HINCRBY", key, state, 1)
  batch_settle(bid, at)
end

-- job `id` ended `state` (completed | failed | cancelled; the deletion of an unfinished
-- job counts as cancelled) at `at`: resolve the jobs waiting on it (cascading) and count
-- it in its batch. has_dependents, batch: its fields of those names.
local function workflow_finished(id, state, at, has_dependents, batch)
  local read = {"state", "dep_wait", "on_dep_fail", "channel", "group_key", "ord", "priority",
                "run_at", "name", "tenant", "attempts", "has_dependents", "batch_id"}
  local todo, k = {{id, state, has_dependents, batch}}, 1
  while todo[k] do
    local jid, st, dependents, bid = todo[k][1], todo[k][2], todo[k][3], todo[k][4]
    k = k + 1
    if bid then batch_count(jid, bid, st, at) end
    if dependents then
      local key = K.dnts(jid)
      local ids = redis.call("SMEMBERS", key)
      redis.call("DEL", key)
      redis.call("HDEL", K.job(jid), "has_dependents")
      table.sort(ids, function(x, y) return tonumber(x) < tonumber(y) end)
      for _, did in ipairs(ids) do
        local d = fields(did, read)
        local left = tonumber(d.dep_wait)
        if d.state == "waiting" and left and left > 0 then
          if st == "completed" or d.on_dep_fail == "run" then
            if left > 1 then
              redis.call("HSET", K.job(did), "dep_wait", int_str(left - 1))
            else
              release_dependent(did, d, at)
            end
          else
            cancel_dependent(did, d, at, jid)
            todo[#todo + 1] = {did, "cancelled", d.has_dependents, d.batch_id}
          end
        end
      end
    end
  end
end
