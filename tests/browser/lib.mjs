// Shared helpers for the browser tests (run by `cargo xtask test`, which serves www/ and models/
// and sets QUANTWEB_BASE_URL, QUANTWEB_ALT_BASE_URL and CHROMIUM).
import { chromium } from 'playwright-core';

/** Page origin: www/ at /, models at /models/ (CORS) and /nocors/ (no CORS headers). */
export const baseUrl = (process.env.QUANTWEB_BASE_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
/** The same server under a second origin (localhost instead of 127.0.0.1), for CORS tests. */
export const altBaseUrl = (process.env.QUANTWEB_ALT_BASE_URL || baseUrl.replace('127.0.0.1', 'localhost')).replace(/\/$/, '');

// `--enable-unsafe-webgpu` is the only flag WebGPU needs in headless Debian Chromium: it gives
// the SwiftShader adapter (vendor "google", architecture "swiftshader", 1 GiB storage bindings,
// no shader-f16). `--enable-features=Vulkan`, `--use-webgpu-adapter=swiftshader`,
// `--enable-unsafe-swiftshader` and `--use-angle=swiftshader` change nothing here; without
// `--enable-unsafe-webgpu`, requestAdapter() returns null. The other flags keep Chromium from
// reaching for the (closed) network and let it run as root.
export const chromiumArgs = [
  '--enable-unsafe-webgpu',
  '--no-sandbox',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Launches headless Chromium (Debian's /usr/bin/chromium unless $CHROMIUM says otherwise);
 * `webgpu: false` leaves out the flag, so that requestAdapter() finds no adapter, as on most
 * Linux desktops.
 */
export function launch({ webgpu = true, ...options } = {}) {
  const args = chromiumArgs.filter((a) => webgpu || a !== '--enable-unsafe-webgpu');
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    ...options,
    args: [...args, ...(options.args || [])],
  });
}
