use std::time::Instant;
fn main() {
    let n = 512;
    let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
    let c: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
    let w: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.001).collect();
    let reps = 200_000;
    let t = Instant::now();
    let mut s = 0.0;
    for r in 0..reps {
        s += metad2a::nn::linalg::dot_tanh(&a, &c[(r % 2)..], &w);
    }
    let el = t.elapsed().as_secs_f64();
    println!(
        "dot_tanh: {:.3} ns per element ({s})",
        el * 1e9 / (reps * n) as f64
    );
    let t = Instant::now();
    for r in 0..reps {
        s += metad2a::nn::linalg::dot_relu(&a, &c[(r % 2)..], &w);
    }
    let el = t.elapsed().as_secs_f64();
    println!(
        "dot_relu: {:.3} ns per element ({s})",
        el * 1e9 / (reps * n) as f64
    );
}
