use std::time::Instant;
fn main() {
    let arch: metad2a::space::Nb201Arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|".parse().unwrap();
    let cfg = metad2a::train::cell_net::NetConfig {
        channels: 8,
        cells: 1,
        classes: 10,
    };
    let mut net = metad2a::train::cell_net::CellNet::new(&arch, cfg, 1);
    let mut rng = metad2a::rng::Rng::new(1, 1);
    let x: Vec<f32> = (0..64 * 16 * 16 * 3).map(|_| rng.normal() as f32).collect();
    let labels: Vec<u32> = (0..64).map(|i| i % 10).collect();
    let mut tapes = vec![
        metad2a::train::cell_net::Tape::new(),
        metad2a::train::cell_net::Tape::new(),
    ];
    for _ in 0..3 {
        let t = Instant::now();
        let n = 20;
        let (mut tf, mut tb) = (0.0, 0.0);
        for _ in 0..n {
            let t0 = Instant::now();
            let logits = net.forward(&x, 64, 16, 16, true, &mut tapes);
            tf += t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let (_, d, _) = metad2a::train::ops::cross_entropy(&logits, &labels, 10);
            let g = net.backward(&mut tapes, &d);
            tb += t1.elapsed().as_secs_f64();
            std::hint::black_box(g);
        }
        let el = t.elapsed().as_secs_f64();
        println!(
            "{:.0} images/s (forward {:.2} ms, backward {:.2} ms per batch)",
            (n * 64) as f64 / el,
            tf * 1e3 / n as f64,
            tb * 1e3 / n as f64
        );
    }
}
