//! The GPU runtime over wgpu: the same code natively (Vulkan, Metal, DX12) and in the browser
//! (WebGPU). One file per op; each op owns its shader in `shaders/` and records dispatches into
//! a caller's command encoder, so a whole decode step is one submission.
//!
//! Nothing here blocks: reading a buffer back is `map_async` + an awaited channel. Natively the
//! device is polled to drive the callback; in the browser the event loop does it.

pub mod shader;

mod act;
mod add;
mod argmax;
mod attention;
mod matmul;
mod pass;
mod quantize;
mod rec;
mod rmsnorm;
mod rope;

pub use act::*;
pub use add::*;
pub use argmax::*;
pub use attention::*;
pub use matmul::*;
pub use pass::*;
pub use quantize::*;
pub use rec::*;
pub use rmsnorm::*;
pub use rope::*;

use crate::error::{Error, Result};
use shader::Defines;
use std::cell::Cell;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A GPU buffer whose bytes count in [`Gpu::live_bytes`] until its last clone is dropped.
/// WebGPU reports no memory figure, so the engine keeps its own: every buffer comes from
/// [`Gpu::create`], and the caches hold these handles too, so what they keep alive is counted.
#[derive(Clone, Debug)]
pub struct Buffer(Rc<Tracked>);

#[derive(Debug)]
struct Tracked {
    buf: wgpu::Buffer,
    live: Rc<Cell<u64>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.live.set(self.live.get() - self.buf.size());
    }
}

/// See [`Gpu::live_counter`].
#[derive(Clone, Debug)]
pub struct LiveBytes(Rc<Cell<u64>>);

impl LiveBytes {
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

impl std::ops::Deref for Buffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        &self.0.buf
    }
}

impl PartialEq for Buffer {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Buffer {}

impl std::hash::Hash for Buffer {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        Rc::as_ptr(&self.0).hash(h)
    }
}

/// What the device offers beyond core WebGPU; faster kernel variants are chosen from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuFeatures {
    pub shader_f16: bool,
    pub subgroups: bool,
    /// WGSL's `packed_4x8_integer_dot_product` (`dot4I8Packed`, `pack4xI8`): the decode matvec
    /// of 4-, 5- and 8-bit legacy types takes ggml's integer dot products (dot4.wgsl).
    pub dot4: bool,
    /// Weights read as `vec4<u32>` (one 16-byte load per 4 words) by the types whose layout
    /// keeps those words aligned. Core WebGPU, so always on; tests turn it off to check the
    /// scalar path.
    pub vec4_loads: bool,
    /// Threads per workgroup of the matvec and the embedding lookup, from the adapter
    /// ([`matvec_wg`]).
    pub matvec_wg: u32,
    /// The adapter runs shaders on the CPU (llvmpipe, SwiftShader, WARP): kernels then avoid
    /// barriers, which cost a thread switch there.
    pub cpu: bool,
}

/// Threads per matvec workgroup: two subgroups where the adapter reports their width (NVIDIA,
/// Apple, Intel: 64; AMD: 128; Qualcomm: 256), else 64, within [64, 256] (a power of two, for
/// the reduction tree) and never above what the adapter allows. Every size is tested on
/// llvmpipe; which is fastest on a given GPU is for the GPU bench to tell.
pub fn matvec_wg(limits: &wgpu::Limits, subgroup_max_size: u32) -> u32 {
    let cap = limits
        .max_compute_invocations_per_workgroup
        .min(limits.max_compute_workgroup_size_x);
    let want = (2 * subgroup_max_size).clamp(64, 256).next_power_of_two();
    let wg = want.min(cap.max(1));
    // The largest power of two not above it.
    1 << wg.ilog2()
}

/// Which adapter to open (see [`Gpu::with_adapter`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterKind {
    /// wgpu's choice (high-performance preference).
    Any,
    /// A discrete, integrated or virtual GPU.
    Hardware,
    /// A CPU adapter (Mesa llvmpipe, SwiftShader, WARP).
    Cpu,
}

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: wgpu::Limits,
    pub features: GpuFeatures,
    pub adapter_info: wgpu::AdapterInfo,
    pipelines: RefCell<HashMap<(String, Defines), Rc<wgpu::ComputePipeline>>>,
    /// Parameter uniforms by content and bind groups by (pipeline, buffers): allocated once,
    /// reused by every later batch of the same shapes.
    uniforms: RefCell<HashMap<Vec<u8>, Buffer>>,
    /// Everything recorded on this device so far (see [`Rec`]); callers take differences.
    counts: Cell<Counts>,
    /// Why the device was lost, once it is (driver reset, GPU process crash, destroy()).
    lost: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// The first error the device reported outside any call (wgpu's default handler panics).
    failed: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    binds: RefCell<HashMap<(wgpu::ComputePipeline, Vec<Buffer>), wgpu::BindGroup>>,
    /// Bytes of the buffers alive on this device (see [`Buffer`]).
    live: Rc<Cell<u64>>,
}

/// Entries a cache may hold before it is emptied: far more than a model's distinct shapes
/// (≈ 20 ops × 64 batch sizes), so it is a bound, not a policy.
const CACHE_LIMIT: usize = 1 << 14;

impl Gpu {
    /// The default adapter with its real limits (not WebGPU's conservative defaults: a 1 GiB
    /// binding instead of 128 MiB matters for embeddings). Optional features are requested when
    /// present and recorded.
    pub async fn new() -> Result<Self> {
        let instance = Self::instance();
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions { power_preference: wgpu::PowerPreference::HighPerformance, ..Default::default() })
            .await
            .map_err(|e| Error::Gpu(format!("no GPU adapter: {e} (in a browser: WebGPU unavailable or disabled; natively: no Vulkan/Metal/DX12 driver)")))?;
        Self::open(&instance, adapter).await
    }

    fn instance() -> wgpu::Instance {
        wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        })
    }

    /// An adapter of the given kind, natively (`quantweb bench --adapter`): a hardware GPU
    /// (discrete first) or a CPU one (llvmpipe), whatever wgpu's default would be.
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn with_adapter(kind: AdapterKind) -> Result<Self> {
        use wgpu::DeviceType as D;
        let rank = |t: D| match (kind, t) {
            (AdapterKind::Any, _) => None,
            (AdapterKind::Cpu, D::Cpu) => Some(0),
            (AdapterKind::Hardware, D::DiscreteGpu) => Some(0),
            (AdapterKind::Hardware, D::IntegratedGpu) => Some(1),
            (AdapterKind::Hardware, D::VirtualGpu) => Some(2),
            _ => None,
        };
        if kind == AdapterKind::Any {
            return Self::new().await;
        }
        let instance = Self::instance();
        let adapters = instance
            .enumerate_adapters(wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY))
            .await;
        let seen: Vec<String> = adapters
            .iter()
            .map(|a| format!("{} ({:?})", a.get_info().name, a.get_info().device_type))
            .collect();
        let adapter = adapters
            .into_iter()
            .filter_map(|a| rank(a.get_info().device_type).map(|r| (r, a)))
            .min_by_key(|(r, _)| *r)
            .map(|(_, a)| a)
            .ok_or_else(|| {
                Error::Gpu(format!(
                    "no {kind:?} adapter among the {} wgpu found: {}",
                    seen.len(),
                    seen.join(", ")
                ))
            })?;
        Self::open(&instance, adapter).await
    }

    async fn open(instance: &wgpu::Instance, adapter: wgpu::Adapter) -> Result<Self> {
        let available = adapter.features();
        let wanted = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
        let required_features = available & wanted;
        let limits = adapter.limits();
        let wg = matvec_wg(&limits, adapter.get_info().subgroup_max_size);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("quantweb"),
                required_features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Gpu(format!("could not open the GPU device: {e}")))?;
        let lost = std::sync::Arc::new(std::sync::Mutex::new(None));
        let flag = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut l) = flag.lock() {
                *l = Some(format!("{reason:?}: {message}"));
            }
        });
        let failed = std::sync::Arc::new(std::sync::Mutex::new(None));
        let first = failed.clone();
        device.on_uncaptured_error(std::sync::Arc::new(move |e: wgpu::Error| {
            if let Ok(mut f) = first.lock() {
                f.get_or_insert_with(|| e.to_string());
            }
        }));
        Ok(Gpu {
            device,
            queue,
            limits,
            features: GpuFeatures {
                shader_f16: required_features.contains(wgpu::Features::SHADER_F16),
                subgroups: required_features.contains(wgpu::Features::SUBGROUP),
                dot4: instance
                    .wgsl_language_features()
                    .contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct),
                vec4_loads: true,
                matvec_wg: wg,
                cpu: adapter.get_info().device_type == wgpu::DeviceType::Cpu,
            },
            adapter_info: adapter.get_info(),
            pipelines: RefCell::new(HashMap::new()),
            uniforms: RefCell::new(HashMap::new()),
            counts: Default::default(),
            lost,
            failed,
            binds: RefCell::new(HashMap::new()),
            live: Rc::default(),
        })
    }

    /// The compute pipeline of `shader` with `defines`, compiled once per device.
    pub fn pipeline(&self, shader: &str, defines: &Defines) -> Result<Rc<wgpu::ComputePipeline>> {
        let key = (shader.to_string(), defines.clone());
        if let Some(p) = self.pipelines.borrow().get(&key) {
            return Ok(p.clone());
        }
        let src = shader::preprocess(shader, defines).map_err(Error::Gpu)?;
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
        let p = Rc::new(
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(shader),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                }),
        );
        self.pipelines.borrow_mut().insert(key, p.clone());
        Ok(p)
    }

    /// A storage buffer holding `data` (padded to a multiple of 4 bytes, as WGSL reads words).
    pub fn upload(&self, label: &str, data: &[u8]) -> Buffer {
        let buf = self.storage(label, data.len() as u64);
        self.write(&buf, 0, &pad4(data));
        buf
    }

    /// `queue.write_buffer`, counted: it takes effect before the next submission.
    pub fn write(&self, buf: &Buffer, offset: u64, data: &[u8]) {
        self.queue.write_buffer(buf, offset, data);
        self.count(|c| c.written_bytes += data.len() as u64);
    }

    /// Everything recorded on this device so far.
    pub fn counts(&self) -> Counts {
        self.counts.get()
    }

    fn count(&self, f: impl FnOnce(&mut Counts)) {
        let mut c = self.counts.get();
        f(&mut c);
        self.counts.set(c);
    }

    /// A uniform buffer holding `bytes` (a shader's parameter struct), one per distinct
    /// content: parameters never change once written, so every op with the same shapes
    /// shares it.
    fn params(&self, bytes: &[u8]) -> Buffer {
        if let Some(b) = self.uniforms.borrow().get(bytes) {
            return b.clone();
        }
        let buf = self.uniform("params", bytes);
        let mut uniforms = self.uniforms.borrow_mut();
        if uniforms.len() >= CACHE_LIMIT {
            uniforms.clear();
        }
        uniforms.insert(bytes.to_vec(), buf.clone());
        buf
    }

    /// A uniform buffer of `bytes`, padded to WGSL's 16-byte uniform size granularity.
    fn uniform(&self, label: &str, bytes: &[u8]) -> Buffer {
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().next_multiple_of(16).max(16), 0);
        let buf = self.create(
            label,
            padded.len() as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );
        self.write(&buf, 0, &padded);
        buf
    }

    /// A zeroed storage buffer of `size` bytes.
    pub fn storage(&self, label: &str, size: u64) -> Buffer {
        self.create(
            label,
            size.next_multiple_of(4).max(4),
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
        )
    }

    /// Every buffer of this device is made here, so that [`Gpu::live_bytes`] sees it.
    fn create(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> Buffer {
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        });
        self.live.set(self.live.get() + size);
        Buffer(Rc::new(Tracked {
            buf,
            live: self.live.clone(),
        }))
    }

    /// Bytes of the GPU buffers alive now: weights, KV cache, activations, parameters, and
    /// whatever the caches keep. Flat across requests once every shape was seen.
    pub fn live_bytes(&self) -> u64 {
        self.live_counter().get()
    }

    /// [`Gpu::live_bytes`] readable without the device, as the page asks while a request runs.
    pub fn live_counter(&self) -> LiveBytes {
        LiveBytes(self.live.clone())
    }

    /// A bind group for `pipeline`'s group 0 with whole `buffers` at bindings 0, 1, 2, … in
    /// order. Made once per (pipeline, buffers): a decode step binds the same buffers as the
    /// one before it.
    pub fn bind(&self, pipeline: &wgpu::ComputePipeline, buffers: &[&Buffer]) -> wgpu::BindGroup {
        let key = (
            pipeline.clone(),
            buffers.iter().map(|&b| b.clone()).collect::<Vec<_>>(),
        );
        if let Some(b) = self.binds.borrow().get(&key) {
            return b.clone();
        }
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut binds = self.binds.borrow_mut();
        if binds.len() >= CACHE_LIMIT {
            binds.clear();
        }
        binds.insert(key, group.clone());
        group
    }

    /// [`Error::DeviceLost`] once the device is gone, or the first error it reported: every
    /// result read after that would be garbage or never come.
    pub fn check_lost(&self) -> Result<()> {
        if let Some(reason) = self.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(Error::DeviceLost { reason });
        }
        match self.failed.lock().ok().and_then(|f| f.clone()) {
            Some(e) => Err(Error::Gpu(e)),
            None => Ok(()),
        }
    }

    /// Copies `size` bytes of `src` back to the CPU, without blocking (one submission).
    pub async fn read(&self, src: &Buffer, size: u64) -> Result<Vec<u8>> {
        Rec::new(self).submit_and_read(src, size).await
    }

    /// `read` as f32 values.
    pub async fn read_f32(&self, src: &Buffer, len: usize) -> Result<Vec<f32>> {
        Ok(bytemuck::cast_slice(&self.read(src, len as u64 * 4).await?).to_vec())
    }
}

/// The position of a batch's first token, in a uniform the model rewrites before each batch.
/// RoPE, the KV store and attention read it from here, so their other parameters (and bind
/// groups) stay the same from one token to the next.
pub struct Pos {
    pub buf: Buffer,
    value: Cell<u32>,
}

impl Pos {
    pub fn new(gpu: &Gpu, pos0: u32) -> Pos {
        Pos {
            buf: gpu.uniform("pos0", bytemuck::bytes_of(&pos0)),
            value: Cell::new(pos0),
        }
    }

    /// Takes effect for work submitted after this call (queue writes precede later submits).
    pub fn set(&self, gpu: &Gpu, pos0: u32) {
        if self.value.replace(pos0) != pos0 {
            gpu.write(&self.buf, 0, bytemuck::bytes_of(&pos0));
        }
    }

    pub fn get(&self) -> u32 {
        self.value.get()
    }
}

/// `data` padded with zeros to a multiple of 4 bytes (queue writes and WGSL words need it).
fn pad4(data: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if data.len().is_multiple_of(4) {
        data.into()
    } else {
        let mut v = data.to_vec();
        v.resize(data.len().next_multiple_of(4), 0);
        v.into()
    }
}

/// Normalized mean squared error: Σ(a−b)² / Σb². How every kernel is compared to its reference.
pub fn nmse(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    err / norm.max(f64::MIN_POSITIVE)
}

/// The GPU for native tests: wgpu's default adapter (Mesa llvmpipe on CI). Without any adapter
/// the GPU tests fail when `QUANTWEB_REQUIRE_GPU=1` (as `cargo xtask test` sets) and skip
/// otherwise, so `cargo test` still runs on a machine without Vulkan.
#[cfg(all(test, not(target_arch = "wasm32")))]
pub fn test_gpu() -> Option<Gpu> {
    match pollster::block_on(Gpu::new()) {
        Ok(g) => Some(g),
        Err(e) if std::env::var("QUANTWEB_REQUIRE_GPU").as_deref() == Ok("1") => panic!("{e}"),
        Err(e) => {
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

/// Uniform values in [-scale, scale) from a fixed seed (splitmix64), for the op tests.
#[cfg(test)]
pub fn test_random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}
