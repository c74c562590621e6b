---@meta lmp
-- LuaLS (lua-language-server) definitions for lmp: add this directory to
-- `workspace.library`. spec/types_spec.lua checks them against the module.

---@class lmp
---@field _VERSION string the version of lmp, e.g. "0.2.0"
local mp = {}

---@class lmp.ProcessInfo
---@field pid integer
---@field name string

---Forks: the child's pid in the parent, 0 in the child; nil, message, errno on failure.
---@return integer|nil pid
---@return string? message
---@return integer? errno
function mp.fork() end

---@return integer
function mp.getpid() end

---@return integer
function mp.getppid() end

---Waits for a child: pid, "exited"|"signaled", code; 0 with nohang and nothing finished.
---@param pid? integer
---@param nohang? boolean
---@return integer|nil pid
---@return "exited"|"signaled"|string|nil how
---@return integer? code
function mp.wait(pid, nohang) end

---Sends a signal (a number or a name such as "TERM", default "TERM").
---@param pid integer
---@param sig? integer|string
---@return true|nil ok
---@return string? message
---@return integer? errno
function mp.kill(pid, sig) end

---CPUs this process may run on (affinity-aware), at least 1.
---@return integer
function mp.cpu_count() end

---Sleeps; resumes after signals, returns early on Ctrl-C.
---@param seconds number
function mp.sleep(seconds) end

---Wall-clock seconds.
---@return number
function mp.time() end

---@return lmp.ProcessInfo
function mp.current_process() end

---The Processes of this process still running.
---@return lmp.Process[]
function mp.active_children() end

---All arguments in one string (nils and count kept).
---@param ... any
---@return string
function mp.encode(...) end

---The values of a message; opts.functions accepts bytecode (trusted input only).
---@param s string
---@param opts? {functions: boolean?}
---@return any ...
function mp.decode(s, opts) end

---Gives a metatable a name: tables with it arrive with the receiver's metatable of that name.
---@param name string
---@param mt table
---@return table mt
function mp.register(name, mt) end

---@class lmp.ProcessOptions
---@field target fun(...): ...
---@field args? table
---@field name? string
---@field daemon? boolean

---A process that runs target(...) in a forked child.
---@overload fun(options: lmp.ProcessOptions): lmp.Process
---@param target fun(...): ...
---@param ... any
---@return lmp.Process
function mp.Process(target, ...) end

---@class lmp.Process
---@field pid integer|nil
---@field name string
---@field daemon boolean
---@field exitcode integer|nil nil while running; 0 success; 1 the target raised; n os.exit(n); -N signal N
---@field sentinel integer|nil an fd readable once the child has ended
local Process = {}

---@return lmp.Process
function Process:start() end

---@param timeout? number seconds
---@return boolean ended
function Process:join(timeout) end

---The target's return values; re-raises its error; raises "lmp: timeout".
---@param timeout? number
---@return any ...
function Process:get(timeout) end

---@return boolean
function Process:is_alive() end

function Process:terminate() end

function Process:kill() end

---@class lmp.PoolOptions
---@field processes? integer
---@field initializer? fun(...)
---@field initargs? table
---@field maxtasksperchild? integer
---@field timeout? number default seconds an item may run
---@field trace? string a Chrome trace file to write
---@field backend? "fork"|"mpi" "mpi": the workers are ranks 1..n-1 of an MPI job (doc/mpi.md)

---@class lmp.CallOptions
---@field chunksize? integer
---@field timeout? number
---@field progress? boolean|fun(done: integer, total: integer|nil)
---@field callback? fun(...)
---@field error_callback? fun(err: any)

---A pool of forked workers (default: cpu_count()).
---@overload fun(options: lmp.PoolOptions): lmp.Pool
---@param processes? integer
---@return lmp.Pool
function mp.Pool(processes) end

---AsyncResults as they finish.
---@param results lmp.AsyncResult[]
---@param timeout? number
---@return fun(): lmp.AsyncResult|nil
function mp.as_completed(results, timeout) end

---@class lmp.Pool
local Pool = {}

---@param f function
---@param args? table
---@param options? lmp.CallOptions
---@return any ...
function Pool:apply(f, args, options) end

---@param f function
---@param args? table
---@param callback? fun(...)|lmp.CallOptions
---@param error_callback? fun(err: any)
---@return lmp.AsyncResult
function Pool:apply_async(f, args, callback, error_callback) end

---apply_async with the arguments as varargs.
---@param f function
---@param ... any
---@return lmp.AsyncResult
function Pool:submit(f, ...) end

---@param f function
---@param iterable table|fun(): any
---@param chunksize? integer|lmp.CallOptions
---@return any[]
function Pool:map(f, iterable, chunksize) end

---@param f function
---@param iterable table|fun(): any
---@param chunksize? integer|lmp.CallOptions
---@param callback? fun(results: any[])
---@param error_callback? fun(err: any)
---@return lmp.AsyncResult
function Pool:map_async(f, iterable, chunksize, callback, error_callback) end

---index, value in input order.
---@param f function
---@param iterable table|fun(): any
---@param chunksize? integer|lmp.CallOptions
---@return fun(): integer, any
function Pool:imap(f, iterable, chunksize) end

---index, value as completed.
---@param f function
---@param iterable table|fun(): any
---@param chunksize? integer|lmp.CallOptions
---@return fun(): integer, any
function Pool:imap_unordered(f, iterable, chunksize) end

---Each item is an args table.
---@param f function
---@param iterable table|fun(): table
---@param chunksize? integer|lmp.CallOptions
---@return any[]
function Pool:starmap(f, iterable, chunksize) end

---@param f function
---@param iterable table|fun(): table
---@param chunksize? integer|lmp.CallOptions
---@param callback? fun(results: any[])
---@param error_callback? fun(err: any)
---@return lmp.AsyncResult
function Pool:starmap_async(f, iterable, chunksize, callback, error_callback) end

function Pool:close() end

function Pool:join() end

function Pool:terminate() end

---Starts writing a Chrome/Perfetto trace of the tasks; false ends it.
---@param path string|false
function Pool:trace(path) end

---An fd readable when results are waiting (nil if the backend has none).
---@return integer|nil
function Pool:fileno() end

---Collects what is ready and runs callbacks, never blocks.
---@return integer finished jobs finished during the call
function Pool:poll() end

---@class lmp.TaskInfo
---@field pid? integer
---@field started? number
---@field ended? number
---@field cpu? number
---@field maxrss? integer KB

---@class lmp.AsyncResult
local AsyncResult = {}

---@param timeout? number
---@return any ...
function AsyncResult:get(timeout) end

---@param timeout? number
---@return boolean ready
function AsyncResult:wait(timeout) end

---@return boolean
function AsyncResult:ready() end

---@return boolean
function AsyncResult:successful() end

---Takes back work no worker has yet.
---@return boolean cancelled
function AsyncResult:cancel() end

---@return lmp.TaskInfo
function AsyncResult:info() end

-- Talking between processes: objects made before a fork are the same objects
-- in every process forked after it.

---Waits for several objects: the ready ones, in the order given ({} on timeout).
---No objects: {} at once without a timeout, after it with one. A negative fd raises.
---(mp.wait(pid [, nohang]) is the other form, declared above.)
---@param objects (lmp.Connection|lmp.Queue|lmp.Process|lmp.AsyncResult|integer|{fileno: fun(self): integer})[]
---@param timeout? number
---@return any[] ready
---@diagnostic disable-next-line: duplicate-set-field
function mp.wait(objects, timeout) end

---@param maxsize? integer 0 or less: unbounded
---@return lmp.Queue
function mp.Queue(maxsize) end

---A Queue without maxsize (the same methods).
---@return lmp.Queue
function mp.SimpleQueue() end

---A Queue with task_done and join.
---@param maxsize? integer
---@return lmp.Queue
function mp.JoinableQueue(maxsize) end

---@class lmp.Queue
local Queue = {}

---Puts v (not nil); waits on a full bounded queue. Python's (v, block, timeout) works too.
---@param v any
---@param timeout? number|boolean
---@return true|nil ok
---@return "full"? why
function Queue:put(v, timeout) end

---@param timeout? number|boolean
---@return any v nil, "empty" on timeout
---@return "empty"? why
function Queue:get(timeout) end

---@param v any
---@return true|nil ok
---@return "full"? why
function Queue:put_nowait(v) end

---@return any v
---@return "empty"? why
function Queue:get_nowait() end

---@return integer
function Queue:qsize() end

---@return boolean
function Queue:empty() end

---@return boolean
function Queue:full() end

---Closes this process's handle (also __close).
function Queue:close() end

---JoinableQueue: one item taken from the queue is done.
function Queue:task_done() end

---JoinableQueue: waits until every item put got its task_done.
---@param timeout? number
---@return boolean done
function Queue:join(timeout) end

---Two Connections; duplex=false: the first receives, the second sends.
---@param duplex? boolean
---@return lmp.Connection a
---@return lmp.Connection b
function mp.Pipe(duplex) end

---@class lmp.Connection
---@field closed boolean
---@field readable boolean
---@field writable boolean
local Connection = {}

---Sends any serializable values as one message (nils and count kept).
---@param ... any
function Connection:send(...) end

---The values of one send; raises "lmp: connection closed" at end of stream.
---@return any ...
function Connection:recv() end

---@param s string
function Connection:send_bytes(s) end

---@return string
function Connection:recv_bytes() end

---True when recv would not block (no timeout: answers at once; math.huge: waits).
---@param timeout? number
---@return boolean
function Connection:poll(timeout) end

---@return integer fd
function Connection:fileno() end

---Closes this process's end (also __close).
function Connection:close() end

---@return lmp.Lock
function mp.Lock() end

---A Lock that its holder may acquire again (the same methods).
---@return lmp.Lock
function mp.RLock() end

---@class lmp.Lock
local Lock = {}

---True; false on timeout; true, "owner died" if the last holder died holding it.
---Python's acquire(block, timeout) works too.
---@param timeout? number|boolean
---@return boolean ok
---@return "owner died"? why
function Lock:acquire(timeout) end

---Raises if this process does not hold the lock.
function Lock:release() end

---Acquires; the value returned releases it when closed (local g <close> = l:hold()).
---Raises "lmp: timeout" on timeout.
---@param timeout? number
---@return any guard
---@return "owner died"? why
function Lock:hold(timeout) end

---@param value? integer default 1
---@return lmp.Semaphore
function mp.Semaphore(value) end

---A Semaphore whose release past its initial value raises (the same methods).
---@param value? integer
---@return lmp.Semaphore
function mp.BoundedSemaphore(value) end

---@class lmp.Semaphore
local Semaphore = {}

---@param timeout? number|boolean
---@return boolean ok
function Semaphore:acquire(timeout) end

---@param n? integer
function Semaphore:release(n) end

---@param timeout? number
---@return any guard
function Semaphore:hold(timeout) end

---@return integer
function Semaphore:get_value() end

---@return lmp.Event
function mp.Event() end

---@class lmp.Event
local Event = {}

function Event:set() end

function Event:clear() end

---@return boolean
function Event:is_set() end

---@param timeout? number
---@return boolean is_set
function Event:wait(timeout) end

---@param lock? lmp.Lock a Lock or RLock (default: a new RLock)
---@return lmp.Condition
function mp.Condition(lock) end

---@class lmp.Condition
local Condition = {}

---@param timeout? number|boolean
---@return boolean ok
---@return "owner died"? why
function Condition:acquire(timeout) end

function Condition:release() end

---@param timeout? number
---@return any guard
function Condition:hold(timeout) end

---Releases the lock, waits for a notify, takes the lock again.
---@param timeout? number
---@return boolean notified
---@return "owner died"? why
function Condition:wait(timeout) end

---@param predicate fun(): any
---@param timeout? number
---@return any the predicate's last value
function Condition:wait_for(predicate, timeout) end

---@param n? integer
function Condition:notify(n) end

function Condition:notify_all() end

---@param parties integer
---@param action? function run by the last party to arrive
---@param timeout? number default for wait
---@return lmp.Barrier
function mp.Barrier(parties, action, timeout) end

---@class lmp.Barrier
---@field broken boolean
---@field n_waiting integer
---@field parties integer
local Barrier = {}

---1..parties; raises "lmp: broken barrier" when broken (timeout, abort, a dead party).
---@param timeout? number
---@return integer
function Barrier:wait(timeout) end

function Barrier:abort() end

function Barrier:reset() end

---@alias lmp.TypeCode "b"|"B"|"h"|"H"|"i"|"I"|"l"|"L"|"q"|"Q"|"f"|"d"

---@param typecode lmp.TypeCode
---@param init? number
---@param opts? {lock: boolean|lmp.Lock}
---@return lmp.Value
function mp.Value(typecode, init, opts) end

---@class lmp.Value
---@field value number read and written atomically; range-checked (unsigned: no negatives; L/Q: 0..math.maxinteger)
local Value = {}

---Adds n (default 1) in one atomic step; the new value.
---@param n? number
---@return number
function Value:add(n) end

---@return lmp.Lock
function Value:get_lock() end

---@param typecode lmp.TypeCode
---@param n_or_values integer|number[]
---@param opts? {lock: boolean|lmp.Lock}
---@return lmp.Array
function mp.Array(typecode, n_or_values, opts) end

---@class lmp.Array
---@field [integer] number? 1-based; nil outside 1..#arr (ipairs works), writes there raise
local Array = {}

---@param i integer
---@param n? number
---@return number
function Array:add(i, n) end

---@return lmp.Lock
function Array:get_lock() end

---@param i? integer
---@param j? integer
---@return number[]
function Array:totable(i, j) end

return mp
