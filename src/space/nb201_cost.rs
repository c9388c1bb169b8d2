//! FLOPs and parameters of the NAS-Bench-201 cell network, computed analytically.
//!
//! The network (NAS-Bench-201's `TinyNetwork` for inference): a 3×3 stem convolution (no bias)
//! with BatchNorm to `C` channels; three stages of `N` cells at `C`, `2C`, `4C` channels,
//! separated by residual reduction blocks (ReLU-Conv3×3(stride 2)-BN, ReLU-Conv3×3-BN, shortcut
//! AvgPool2×2 + Conv1×1 without bias); a final BatchNorm + ReLU, global average pooling and a
//! linear classifier. Cell operations: `nor_conv_k×k` = ReLU-Conv(k×k, no bias)-BN (affine),
//! `avg_pool_3x3` (stride 1), `skip_connect` and `none` cost nothing.
//!
//! Counting follows NAS-Bench-201's own counter: a convolution costs
//! `k·k·C_in·C_out` multiply-adds per output position (plus `C_out` per position with a bias),
//! average pooling `k·k` per output element, the classifier `in·out + out`; BatchNorm and ReLU
//! are not counted. Parameters count every weight and bias, BatchNorm affine pairs included
//! (running statistics excluded). The standard network is `C = 16`, `N = 5`, 32×32 input,
//! 10 classes, where the space spans 7.8 to 220.1 MFLOPs and 0.073 to 1.53 M parameters.

use super::nb201::Nb201Arch;

/// Size of the network the costs refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nb201Net {
    /// Channels of the first stage.
    pub channels: usize,
    /// Cells per stage.
    pub cells: usize,
    /// Input height and width.
    pub resolution: usize,
    pub classes: usize,
}

impl Default for Nb201Net {
    /// The standard CIFAR network: C = 16, N = 5, 32×32, 10 classes.
    fn default() -> Self {
        Nb201Net {
            channels: 16,
            cells: 5,
            resolution: 32,
            classes: 10,
        }
    }
}

/// Costs of one network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    /// Multiply-adds (NAS-Bench-201 "FLOPs").
    pub flops: u64,
    pub params: u64,
}

fn conv(cin: usize, cout: usize, k: usize, hw_out: usize) -> (u64, u64) {
    let macs = (k * k * cin * cout * hw_out) as u64;
    (macs, (k * k * cin * cout) as u64)
}

impl Nb201Arch {
    /// FLOPs and parameters of this cell in the network `net`.
    pub fn cost(&self, net: &Nb201Net) -> Cost {
        let (mut flops, mut params) = (0u64, 0u64);
        let mut add = |(f, p): (u64, u64)| {
            flops += f;
            params += p;
        };
        let c = net.channels;
        let hw = net.resolution * net.resolution;
        // stem: conv 3x3, 3 -> C, + BN
        add(conv(3, c, 3, hw));
        add((0, 2 * c as u64));
        let mut side = net.resolution;
        for stage in 0..3 {
            let ch = c << stage;
            if stage > 0 {
                let cin = ch / 2;
                let out_side = side.div_ceil(2);
                let out_hw = out_side * out_side;
                add(conv(cin, ch, 3, out_hw)); // conv_a, stride 2
                add((0, 2 * ch as u64));
                add(conv(ch, ch, 3, out_hw)); // conv_b
                add((0, 2 * ch as u64));
                add(((4 * cin * out_hw) as u64, 0)); // shortcut avg-pool 2x2
                add(conv(cin, ch, 1, out_hw)); // shortcut conv 1x1
                side = out_side;
            }
            let shw = side * side;
            for _ in 0..net.cells {
                for &op in &self.ops {
                    match op {
                        2 => {
                            add(conv(ch, ch, 1, shw));
                            add((0, 2 * ch as u64));
                        }
                        3 => {
                            add(conv(ch, ch, 3, shw));
                            add((0, 2 * ch as u64));
                        }
                        4 => add(((9 * ch * shw) as u64, 0)),
                        _ => {}
                    }
                }
            }
        }
        let last = 4 * c;
        add((0, 2 * last as u64)); // final BN
        add((
            (last * net.classes + net.classes) as u64,
            (last * net.classes + net.classes) as u64,
        ));
        Cost { flops, params }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arch(s: &str) -> Nb201Arch {
        s.parse().unwrap()
    }

    #[test]
    fn all_none_cell_by_hand() {
        // stem 3*16*9*1024 = 442,368; reduction 1 (16->32, 16x16 out): 1,179,648 + 2,359,296
        // + pool 4*16*256 = 16,384 + 1x1 131,072; reduction 2 (32->64, 8x8 out): 1,179,648 +
        // 2,359,296 + pool 4*32*64 = 8,192 + 131,072; classifier 650.
        let a = arch("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|");
        let c = a.cost(&Nb201Net::default());
        assert_eq!(c.flops, 7_807_626);
        // stem 432 + 32; red1 4,608 + 64 + 9,216 + 64 + 512; red2 18,432 + 128 + 36,864 + 128
        // + 2,048; final BN 128; classifier 650.
        assert_eq!(c.params, 73_306);
    }

    #[test]
    fn all_conv3x3_cell_by_hand() {
        // cells add 6 edges * 5 cells * 3 stages * 2,359,296 multiply-adds (the same at every
        // stage: channels double while positions quarter) and 30 * (2,304 + 32) + 30 * (9,216
        // + 64) + 30 * (36,864 + 128) parameters.
        let a = arch("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|");
        let c = a.cost(&Nb201Net::default());
        assert_eq!(c.flops, 7_807_626 + 90 * 2_359_296);
        assert_eq!(c.params, 73_306 + 30 * 2_336 + 30 * 9_280 + 30 * 36_992);
        // The NAS-Bench-201 paper's range tops out at 220.11 MFLOPs and 1.53 M parameters.
        assert_eq!(c.flops / 10_000, 22_014);
        assert_eq!(c.params / 10_000, 153);
    }

    #[test]
    fn mixed_cell_by_hand() {
        // one conv1x1 (16*16*1024 = 262,144 at every stage; params 256+32, 1,024+64,
        // 4,096+128), one avg-pool (9 per output element: 9*16*1024 = 147,456, then 73,728 and
        // 36,864, halving with each stage), skips and nones free.
        let a =
            arch("|nor_conv_1x1~0|+|avg_pool_3x3~0|skip_connect~1|+|none~0|skip_connect~1|none~2|");
        let c = a.cost(&Nb201Net::default());
        assert_eq!(
            c.flops,
            7_807_626 + 15 * 262_144 + 5 * (147_456 + 73_728 + 36_864)
        );
        assert_eq!(c.params, 73_306 + 5 * (288 + 1_088 + 4_224));
    }

    #[test]
    fn costs_grow_with_width() {
        let a = arch("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|");
        let small = a.cost(&Nb201Net::default());
        let wide = a.cost(&Nb201Net {
            channels: 32,
            ..Nb201Net::default()
        });
        assert!(wide.flops > 3 * small.flops && wide.params > 3 * small.params);
    }
}
