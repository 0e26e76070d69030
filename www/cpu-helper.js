// A helper thread of the threaded CPU engine (www/pkg-threads*), started by worker.js: it
// instantiates the same module on the engine worker's shared memory and then takes its share of
// every parallel loop, forever (cpu/pool.rs: it spins, then parks on memory.atomic.wait32, which
// a worker may do). worker.js terminates it with the engine worker.

self.onmessage = async ({ data: { dir, module, memory } }) => {
  let index;
  let cpuHelperRun;
  try {
    // The bindings of the build the engine worker runs (plain or relaxed SIMD).
    const lib = await import(new URL(`${dir}quantweb.js`, import.meta.url));
    cpuHelperRun = lib.cpuHelperRun;
    lib.initSync({ module, memory });
    index = lib.cpuHelperJoin();
  } catch (e) {
    self.postMessage({ error: String(e && e.message ? e.message : e) });
    return;
  }
  // Posted before the loop starts: the message leaves now, though this worker never returns.
  self.postMessage({ ready: index });
  cpuHelperRun(index);
};
