//! FLOPs and parameters of an OFA MobileNetV3 subnet (width 1.0), computed analytically.
//!
//! The network is the subnet that Once-for-All's `ofa_mbv3_d234_e346_k357_w1.0` extracts:
//! - first conv 3×3, stride 2, 3 → 16 channels, BatchNorm, h-swish;
//! - first block: depthwise 3×3 (16) + BN + ReLU, pointwise 16 → 16 + BN (expand ratio 1,
//!   identity shortcut);
//! - five stages of `d` MBConv blocks with widths 24, 40, 80, 112, 160, strides 2, 2, 2, 1, 2
//!   (on the first block of the stage), squeeze-and-excitation in stages 2, 4 and 5 (the 40-,
//!   112- and 160-wide ones). A block with input width `c`, kernel `k` and ratio `e`: pointwise
//!   `c → m` with `m = make_divisible(round(c·e), 8)` + BN, depthwise `k×k` over `m` + BN,
//!   optional SE (`m → make_divisible(m / 4, 8) → m`, 1×1 convolutions with bias, on the pooled
//!   vector), pointwise `m → out` + BN;
//! - final expand 1×1, 160 → 960 + BN; global average pool; feature mix 1×1, 960 → 1280 (no
//!   bias, no BN); classifier linear 1280 → classes with bias (1000 for ImageNet).
//!
//! Counting follows OFA's `count_net_flops` (its `profile` hooks): a convolution costs
//! `C_in/groups · k·k` multiply-adds per output element, a linear layer `in·out`; BatchNorm,
//! activations, pooling, the SE scaling, residual additions and biases are not counted.
//! Parameters count every weight and bias, BatchNorm affine pairs included (running statistics
//! excluded). Convolutions use "same" padding, so a stride-2 layer maps `h` to `ceil(h / 2)`.

use super::mbv3::{Mbv3Arch, STAGES};
use super::nb201_cost::Cost;

/// Size of the network the costs refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mbv3Net {
    /// Input height and width.
    pub resolution: usize,
    /// Classifier outputs.
    pub classes: usize,
}

impl Default for Mbv3Net {
    /// ImageNet: 224×224, 1000 classes (OFA's own accounting).
    fn default() -> Self {
        Mbv3Net {
            resolution: 224,
            classes: 1000,
        }
    }
}

const FIRST_WIDTH: usize = 16;
const STAGE_WIDTHS: [usize; STAGES] = [24, 40, 80, 112, 160];
const STAGE_STRIDES: [usize; STAGES] = [2, 2, 2, 1, 2];
const STAGE_SE: [bool; STAGES] = [false, true, false, true, true];
const FINAL_EXPAND: usize = 960;
const LAST_CHANNEL: usize = 1280;

/// OFA's `make_divisible(v, 8)`: the nearest multiple of 8, never below 90% of `v`.
fn make_divisible(v: f64) -> usize {
    let d = 8.0;
    let mut n = ((v + d / 2.0) / d).floor() * d;
    n = n.max(d);
    if n < 0.9 * v {
        n += d;
    }
    n as usize
}

/// Python's `round` (ties to even) of a non-negative product, as OFA uses it.
fn round_half_even(v: f64) -> f64 {
    let r = v.round();
    if (v - v.trunc() - 0.5).abs() < 1e-12 && r % 2.0 != 0.0 {
        r - 1.0
    } else {
        r
    }
}

#[derive(Default)]
struct Acc {
    flops: u64,
    params: u64,
}

impl Acc {
    /// A convolution (optionally grouped as depthwise) producing `hw` output positions.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        cin: usize,
        cout: usize,
        k: usize,
        depthwise: bool,
        hw: usize,
        bias: bool,
        bn: bool,
    ) {
        let per_out = if depthwise { k * k } else { cin * k * k };
        self.flops += (per_out * cout * hw) as u64;
        self.params += (per_out * cout) as u64
            + if bias { cout as u64 } else { 0 }
            + if bn { 2 * cout as u64 } else { 0 };
    }
}

fn down(h: usize, stride: usize) -> usize {
    h.div_ceil(stride)
}

impl Mbv3Arch {
    /// FLOPs (multiply-adds) and parameters of this subnet in `net`.
    pub fn cost(&self, net: &Mbv3Net) -> Cost {
        let mut a = Acc::default();
        let mut h = down(net.resolution, 2);
        a.conv(3, FIRST_WIDTH, 3, false, h * h, false, true);
        // first block: depthwise 3x3 + pointwise, expand ratio 1
        a.conv(FIRST_WIDTH, FIRST_WIDTH, 3, true, h * h, false, true);
        a.conv(FIRST_WIDTH, FIRST_WIDTH, 1, false, h * h, false, true);
        let mut c = FIRST_WIDTH;
        let mut stage_block = [0usize; STAGES];
        for (s, k, e) in self.active_blocks() {
            let stride = if stage_block[s] == 0 {
                STAGE_STRIDES[s]
            } else {
                1
            };
            stage_block[s] += 1;
            let out = STAGE_WIDTHS[s];
            let m = make_divisible(round_half_even(c as f64 * e as f64));
            a.conv(c, m, 1, false, h * h, false, true);
            h = down(h, stride);
            a.conv(m, m, k as usize, true, h * h, false, true);
            if STAGE_SE[s] {
                let r = make_divisible((m / 4) as f64);
                a.conv(m, r, 1, false, 1, true, false);
                a.conv(r, m, 1, false, 1, true, false);
            }
            a.conv(m, out, 1, false, h * h, false, true);
            c = out;
        }
        a.conv(c, FINAL_EXPAND, 1, false, h * h, false, true);
        a.conv(FINAL_EXPAND, LAST_CHANNEL, 1, false, 1, false, false);
        a.flops += (LAST_CHANNEL * net.classes) as u64;
        a.params += (LAST_CHANNEL * net.classes + net.classes) as u64;
        Cost {
            flops: a.flops,
            params: a.params,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::mbv3::SLOTS;

    #[test]
    fn make_divisible_matches_ofa() {
        // values OFA produces for the SE widths of this space
        for (v, want) in [
            (30.0, 32),
            (40.0, 40),
            (60.0, 64),
            (84.0, 88),
            (112.0, 112),
            (168.0, 168),
            (120.0, 120),
            (240.0, 240),
        ] {
            assert_eq!(make_divisible(v), want, "{v}");
        }
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert_eq!(round_half_even(72.0), 72.0);
    }

    /// The smallest and the largest subnet, counted by hand layer by layer (see
    /// docs/mbv3-costs.md for the tables these sums come from).
    #[test]
    fn smallest_and_largest_subnets() {
        let small = Mbv3Arch {
            ks: [3; SLOTS],
            e: [3; SLOTS],
            d: [2; STAGES],
        };
        let large = Mbv3Arch {
            ks: [7; SLOTS],
            e: [6; SLOTS],
            d: [4; STAGES],
        };
        let net = Mbv3Net::default();
        let s = small.cost(&net);
        let l = large.cost(&net);
        assert_eq!((s.flops, s.params), (SMALL_FLOPS, SMALL_PARAMS));
        assert_eq!((l.flops, l.params), (LARGE_FLOPS, LARGE_PARAMS));
        // inactive slots do not count
        let mut other = small;
        other.ks[3] = 7;
        other.e[3] = 6;
        assert_eq!(other.cost(&net), s);
    }

    const SMALL_FLOPS: u64 = 121_278_672;
    const SMALL_PARAMS: u64 = 3_410_792;
    const LARGE_FLOPS: u64 = 566_170_656;
    const LARGE_PARAMS: u64 = 7_664_760;
}
