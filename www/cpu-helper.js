// A helper thread of the threaded CPU engine (www/pkg-threads), started by worker.js: it
// instantiates the same module on the engine worker's shared memory and then takes its share of
// every parallel loop, forever (cpu/pool.rs: it spins, then parks on memory.atomic.wait32, which
// a worker may do). worker.js terminates it with the engine worker.

import { initSync, cpuHelperJoin, cpuHelperRun } from './pkg-threads/quantweb.js';

self.onmessage = ({ data: { module, memory } }) => {
  let index;
  try {
    initSync({ module, memory });
    index = cpuHelperJoin();
  } catch (e) {
    self.postMessage({ error: String(e && e.message ? e.message : e) });
    return;
  }
  // Posted before the loop starts: the message leaves now, though this worker never returns.
  self.postMessage({ ready: index });
  cpuHelperRun(index);
};
