// Where matvec.wgsl and matmul.wgsl put a result: their shared parameters, output bindings
// and `store(t, row, v)` for token t and row `row` of the whole matrix.
// - default: y[t, row] = v (y is [n_tokens, y_stride]);
// - ADD_TO: y[t, row] += v, the residual add in passing (the same f32 sum add.wgsl computes);
// - SPLIT3: rows [0, seg1), [seg1, seg2) and [seg2, y_stride) of one matrix (q, k, v uploaded
//   as one) go to y, y1 and y2, each [n_tokens, its rows].
struct Params {
    rows: u32,            // rows in this buffer
    units_per_row: u32,   // cols / (4 * UNIT_V4)
    row0: u32,            // first row of this buffer in the whole matrix
    d_off: u32,           // word offset of the separated f16 d array
    n_tokens: u32,
    y_stride: u32,        // rows of the whole matrix
    seg1: u32,            // SPLIT3 boundaries
    seg2: u32,
}

@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
#ifdef SPLIT3
@group(0) @binding(4) var<storage, read_write> y1: array<f32>;
@group(0) @binding(5) var<storage, read_write> y2: array<f32>;
#endif

fn store(t: u32, row: u32, v: f32) {
#ifdef SPLIT3
    if (row < p.seg1) {
        y[t * p.seg1 + row] = v;
    } else if (row < p.seg2) {
        y1[t * (p.seg2 - p.seg1) + row - p.seg1] = v;
    } else {
        y2[t * (p.y_stride - p.seg2) + row - p.seg2] = v;
    }
#else
    let i = t * p.y_stride + row;
#ifdef ADD_TO
    y[i] = y[i] + v;
#else
    y[i] = v;
#endif
#endif
}
