//! The recording context: ops record their dispatches into one compute pass of one command
//! encoder, so a whole batch (a decode step, a prefill batch) is one pass and one submission,
//! and its result comes back in that same submission. Everything recorded is counted here.
//!
//! WebGPU makes each dispatch its own synchronization scope, so a dispatch sees what the
//! dispatches before it in the same pass wrote: one pass costs nothing in correctness. Only a
//! buffer copy ends the pass, and the forward pass records none.

use super::{Buffer, Gpu};
use crate::error::{Error, Result};
use serde::Serialize;

/// What recorded GPU work costs, counted as it is recorded. Bytes read by kernels are computed
/// from shapes (each kernel's whole working set once), not measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Compute dispatches.
    pub dispatches: u64,
    /// Compute passes (one per [`Rec`], plus one per buffer copy inside it).
    pub passes: u64,
    /// Queue submissions.
    pub submits: u64,
    /// Buffers mapped back to the CPU, and their bytes.
    pub readbacks: u64,
    pub readback_bytes: u64,
    /// Bytes written with `queue.write_buffer` (token ids, the position; weights while loading).
    pub written_bytes: u64,
    /// Bytes of quantized weights the kernels read.
    pub weight_bytes: u64,
    /// Bytes of the KV cache read (attention) and written (the store).
    pub kv_bytes: u64,
    /// Bytes of activations read: kernel inputs other than weights and the KV cache.
    pub activation_bytes: u64,
}

impl Counts {
    /// `self − earlier`, field by field: what was recorded between two snapshots.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            dispatches: self.dispatches - earlier.dispatches,
            passes: self.passes - earlier.passes,
            submits: self.submits - earlier.submits,
            readbacks: self.readbacks - earlier.readbacks,
            readback_bytes: self.readback_bytes - earlier.readback_bytes,
            written_bytes: self.written_bytes - earlier.written_bytes,
            weight_bytes: self.weight_bytes - earlier.weight_bytes,
            kv_bytes: self.kv_bytes - earlier.kv_bytes,
            activation_bytes: self.activation_bytes - earlier.activation_bytes,
        }
    }
}

impl Counts {
    /// The mean over `n` steps (batches, tokens), each field rounded to the nearest integer.
    pub fn per(&self, n: u64) -> Counts {
        let n = n.max(1);
        let f = |v: u64| (v + n / 2) / n;
        Counts {
            dispatches: f(self.dispatches),
            passes: f(self.passes),
            submits: f(self.submits),
            readbacks: f(self.readbacks),
            readback_bytes: f(self.readback_bytes),
            written_bytes: f(self.written_bytes),
            weight_bytes: f(self.weight_bytes),
            kv_bytes: f(self.kv_bytes),
            activation_bytes: f(self.activation_bytes),
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let mb = |b: u64| b as f64 / 1e6;
        write!(
            f,
            "{} dispatches, {} passes, {} submits, {} readbacks ({} B), {} B written; kernels read {:.2} MB weights, {:.3} MB KV, {:.3} MB activations",
            self.dispatches,
            self.passes,
            self.submits,
            self.readbacks,
            self.readback_bytes,
            self.written_bytes,
            mb(self.weight_bytes),
            mb(self.kv_bytes),
            mb(self.activation_bytes)
        )
    }
}

/// Bytes one dispatch reads, by kind (see [`Counts`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Reads {
    pub weights: u64,
    pub kv: u64,
    pub act: u64,
}

impl Reads {
    /// A kernel that reads only activations: `bytes` of them.
    pub fn act(bytes: u64) -> Reads {
        Reads {
            act: bytes,
            ..Reads::default()
        }
    }
}

/// One command encoder with at most one open compute pass, on one device.
pub struct Rec<'g> {
    pub gpu: &'g Gpu,
    enc: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
}

impl<'g> Rec<'g> {
    pub fn new(gpu: &'g Gpu) -> Rec<'g> {
        Rec {
            gpu,
            enc: gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None }),
            pass: None,
        }
    }

    /// The compiled pipeline of `shader` with `defines` (see [`Gpu::pipeline`]).
    pub fn pipeline(
        &self,
        shader: &str,
        defines: &super::shader::Defines,
    ) -> Result<std::rc::Rc<wgpu::ComputePipeline>> {
        self.gpu.pipeline(shader, defines)
    }

    /// The uniform buffer holding `params`, a shader's `#[repr(C)]` parameter struct.
    pub fn params<P: bytemuck::Pod>(&self, params: &P) -> Buffer {
        self.gpu.params(bytemuck::bytes_of(params))
    }

    /// Records one dispatch of `pipeline` over `groups` workgroups with `buffers` bound at
    /// 0, 1, 2, … of group 0, counting `reads`.
    pub fn dispatch(
        &mut self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&Buffer],
        groups: (u32, u32, u32),
        reads: Reads,
    ) {
        let bind = self.gpu.bind(pipeline, buffers);
        let gpu = self.gpu;
        let pass = self.pass.get_or_insert_with(|| {
            gpu.count(|c| c.passes += 1);
            self.enc
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: None,
                })
                .forget_lifetime()
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        gpu.count(|c| {
            c.dispatches += 1;
            c.weight_bytes += reads.weights;
            c.kv_bytes += reads.kv;
            c.activation_bytes += reads.act;
        });
    }

    /// Copies `size` bytes between buffers; this ends the open compute pass.
    pub fn copy(
        &mut self,
        src: &Buffer,
        src_offset: u64,
        dst: &Buffer,
        dst_offset: u64,
        size: u64,
    ) {
        self.pass = None;
        self.enc
            .copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size);
    }

    /// Submits what was recorded.
    pub fn submit(mut self) {
        self.pass = None;
        self.gpu.queue.submit([self.enc.finish()]);
        self.gpu.count(|c| c.submits += 1);
    }

    /// Submits what was recorded together with a copy of `size` bytes of `src` into a mapped
    /// buffer, and returns those bytes once the GPU is done: one submission for a whole batch
    /// and its result. Never blocks in the browser (`map_async` and an awaited channel).
    pub async fn submit_and_read(mut self, src: &Buffer, size: u64) -> Result<Vec<u8>> {
        let gpu = self.gpu;
        gpu.check_lost()?;
        let size = size.next_multiple_of(4);
        let staging = gpu.create(
            "readback",
            size,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        self.copy(src, 0, &staging, 0, size);
        self.submit();
        gpu.count(|c| {
            c.readbacks += 1;
            c.readback_bytes += size;
        });
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("device poll: {e}")))?;
        let mapped = rx.await;
        gpu.check_lost()?;
        mapped
            .map_err(|_| Error::Gpu("a result was never read back".into()))?
            .map_err(|e| Error::Gpu(format!("reading a result back failed: {e}")))?;
        let out = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading a result back failed: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(out)
    }
}
