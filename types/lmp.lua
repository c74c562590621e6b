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
---@field backend? "fork"|"mpi"

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

return mp
