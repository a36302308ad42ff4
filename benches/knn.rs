//! The neighbour search alone: `knn::approximate` on clustered points in the influence stage's
//! 32 search dimensions, with its recall against exact search on a sample.
//!
//! `cargo bench --bench knn` runs 1M points (what a 1M-row scan searches), `-- --quick` 100k;
//! `-- --probes=N` searches N lists per point (the scan's `knn-probes`, default 8).
//! The points are 10 Gaussian clusters with decaying spreads per dimension (as principal
//! coordinates are): the kernel's speed depends on the candidate counts, not on the values, but
//! the recall does.

use std::time::Instant;

use datavet::influence::knn;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

const DIM: usize = 32;
const K: usize = 10;

fn points(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let centres: Vec<f32> = (0..10 * DIM).map(|_| rng.gen_range(-8.0..8.0)).collect();
    let spread: Vec<f32> = (0..DIM).map(|d| 2.0 / (1.0 + d as f32).sqrt()).collect();
    let mut x = Vec::with_capacity(n * DIM);
    for i in 0..n {
        let c = i % 10;
        for d in 0..DIM {
            let z: f32 = StandardNormal.sample(&mut rng);
            x.push(centres[c * DIM + d] + spread[d] * z);
        }
    }
    x
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 100_000 } else { 1_000_000 };
    let x = points(n, 7);
    let probes = std::env::args()
        .find_map(|a| a.strip_prefix("--probes=").and_then(|v| v.parse().ok()))
        .unwrap_or(8);
    let start = Instant::now();
    let (found, _) = knn::approximate(&x, DIM, K, probes, 1);
    let seconds = start.elapsed().as_secs_f64();
    let queries: Vec<usize> = (0..n).step_by(n / 200).collect();
    let truth = knn::exact(&x, DIM, K, &queries);
    println!(
        "knn {n} x {DIM}, k {K}, {probes} probes: {seconds:.2} s ({:.0} points/s), recall {:.3}",
        n as f64 / seconds,
        knn::recall(&found, &truth, &queries)
    );
}
