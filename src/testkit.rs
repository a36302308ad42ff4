//! Seeded synthetic datasets with planted poison, for `datavet sample`, tests, benches and the
//! quality evaluation. Not part of the stable API.
//!
//! Two kinds of activations:
//! - `Gaussian`: classes of uneven spread with low-rank anisotropy; poison is a shifted copy of a
//!   source class's shape placed near the target class (a trigger direction added).
//! - `Relu`: the hidden layer of a small ReLU network actually trained (SGD with each record's
//!   gradient clipped, softmax head) on inputs where poisoned records carry a trigger pattern and
//!   the target label: sparse, non-negative, heavy-tailed activations, and a poison cluster only
//!   as tight as training made it.

use std::sync::Arc;

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use rand::distributions::Distribution;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;

/// Which activations to synthesise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Kind {
    Gaussian,
    Relu,
}

/// What poison to plant.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum Attack {
    None,
    /// A backdoor: `rate` of the target class's final rows are triggered records from other classes.
    Backdoor {
        target: usize,
        rate: f64,
        strength: f64,
    },
    /// Random label flips of `rate` of all rows (the vectors stay those of the true class).
    LabelFlip {
        rate: f64,
    },
    /// `groups` groups of `copies` near-identical records each (one input repeated with tiny
    /// perturbations), taken from other classes and labelled `target`: the last rows of `target`.
    NearCopies {
        target: usize,
        groups: usize,
        copies: usize,
    },
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Spec {
    pub kind: Kind,
    pub classes: usize,
    pub rows_per_class: usize,
    pub dim: usize,
    pub attack: Attack,
    pub seed: u64,
}

/// A generated dataset with its answer key (`poisoned`), which is never written to the Parquet file.
pub struct Synthetic {
    pub ids: Vec<i64>,
    pub labels: Vec<i64>,
    pub sources: Vec<String>,
    pub x: Vec<f32>,
    pub dim: usize,
    pub poisoned: Vec<bool>,
    /// For `Kind::Relu`: the network and inputs, for retrain checks.
    pub world: Option<ReluWorld>,
    /// For `Kind::Relu`: the trained network's (in-sample) class probabilities, `n * classes`.
    pub probs: Option<Vec<f32>>,
    /// For `Kind::Relu`: each record's training loss in every epoch, `n * EPOCHS`.
    pub losses: Option<Vec<f32>>,
}

fn normal(rng: &mut Xoshiro256PlusPlus) -> f32 {
    StandardNormal.sample(rng)
}

fn normals(rng: &mut Xoshiro256PlusPlus, n: usize) -> Vec<f32> {
    (0..n).map(|_| normal(rng)).collect()
}

/// Labels and poison of every row, drawn before any vector.
struct Plan {
    labels: Vec<i64>,
    /// The class each record really comes from (differs from its label for poison).
    origin: Vec<usize>,
    poisoned: Vec<bool>,
    /// Carries the backdoor trigger.
    triggered: Vec<bool>,
    /// For near-copies: the row this one copies (the first of its group).
    copy_of: Vec<Option<usize>>,
}

fn plan(spec: &Spec, rng: &mut Xoshiro256PlusPlus) -> Plan {
    let n = spec.classes * spec.rows_per_class;
    let mut labels: Vec<i64> = (0..n).map(|i| (i / spec.rows_per_class) as i64).collect();
    let mut origin: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let mut poisoned = vec![false; n];
    let mut copy_of = vec![None; n];
    match spec.attack {
        Attack::None => {}
        Attack::Backdoor { target, rate, .. } => {
            let k = ((rate * spec.rows_per_class as f64).round() as usize).max(1);
            let start = (target + 1) * spec.rows_per_class - k;
            for i in start..start + k {
                poisoned[i] = true;
                let mut src = rng.gen_range(0..spec.classes);
                if src == target {
                    src = (src + 1) % spec.classes;
                }
                origin[i] = src;
            }
        }
        Attack::NearCopies { target, groups, copies } => {
            let total = (groups * copies).min(spec.rows_per_class);
            let start = (target + 1) * spec.rows_per_class - total;
            for (k, i) in (start..start + total).enumerate() {
                poisoned[i] = true;
                let first = start + (k / copies) * copies;
                if i == first {
                    let mut src = rng.gen_range(0..spec.classes);
                    if src == target {
                        src = (src + 1) % spec.classes;
                    }
                    origin[i] = src;
                } else {
                    origin[i] = origin[first];
                    copy_of[i] = Some(first);
                }
            }
        }
        Attack::LabelFlip { rate } => {
            for i in 0..n {
                if rng.r#gen::<f64>() < rate {
                    let shift = rng.gen_range(1..spec.classes);
                    labels[i] = ((labels[i] as usize + shift) % spec.classes) as i64;
                    poisoned[i] = true;
                }
            }
        }
    }
    let backdoor = matches!(spec.attack, Attack::Backdoor { .. });
    Plan {
        labels,
        origin,
        triggered: poisoned.iter().map(|&p| p && backdoor).collect(),
        poisoned,
        copy_of,
    }
}

/// Makes every near-copy row a copy of its group's first row plus noise of `jitter` per entry.
fn apply_copies(x: &mut [f32], width: usize, copy_of: &[Option<usize>], jitter: f32, rng: &mut Xoshiro256PlusPlus) {
    for (i, of) in copy_of.iter().enumerate() {
        if let Some(first) = *of {
            for j in 0..width {
                x[i * width + j] = x[first * width + j] + jitter * normal(rng);
            }
        }
    }
}

/// The answer key of `spec` (which rows are poisoned) without generating any vector.
pub fn answer_key(spec: &Spec) -> Vec<bool> {
    plan(spec, &mut Xoshiro256PlusPlus::seed_from_u64(spec.seed)).poisoned
}

/// Generates `spec`. Same spec, same bytes.
pub fn generate(spec: &Spec) -> Synthetic {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(spec.seed);
    let n = spec.classes * spec.rows_per_class;
    let Plan {
        labels,
        origin,
        poisoned,
        triggered,
        copy_of,
    } = plan(spec, &mut rng);
    let strength = match spec.attack {
        Attack::Backdoor { strength, .. } => strength,
        _ => 0.0,
    };
    let (x, world, probs, losses) = match spec.kind {
        Kind::Gaussian => {
            let mut x = gaussian(spec, &mut rng, &origin, &labels, &triggered, strength);
            apply_copies(&mut x, spec.dim, &copy_of, 0.01, &mut rng);
            (x, None, None, None)
        }
        Kind::Relu => {
            let (x, world, probs, losses) = relu(spec, &mut rng, &origin, &labels, &triggered, &copy_of, strength);
            (x, Some(world), Some(probs), Some(losses))
        }
    };
    let sources = (0..n)
        .map(|i| format!("vendor-{}", (i * 7 + spec.seed as usize) % 5))
        .collect();
    let ids = (0..n as i64).map(|i| 100_000 + i).collect();
    Synthetic {
        ids,
        labels,
        sources,
        x,
        dim: spec.dim,
        poisoned,
        world,
        probs,
        losses,
    }
}

fn gaussian(
    spec: &Spec,
    rng: &mut Xoshiro256PlusPlus,
    origin: &[usize],
    labels: &[i64],
    triggered: &[bool],
    strength: f64,
) -> Vec<f32> {
    let (d, rank) = (spec.dim, 8.min(spec.dim));
    // Per class: mean, a rank-8 factor and an isotropic noise scale; spreads differ by 4x.
    let means: Vec<Vec<f32>> = (0..spec.classes)
        .map(|_| normals(rng, d).iter().map(|v| v * 1.5).collect())
        .collect();
    let scales: Vec<f32> = (0..spec.classes).map(|_| 0.5 + 1.5 * rng.r#gen::<f32>()).collect();
    let factors: Vec<Vec<f32>> = (0..spec.classes)
        .map(|c| {
            normals(rng, d * rank)
                .iter()
                .map(|v| v * scales[c] * 0.6 / (rank as f32).sqrt())
                .collect()
        })
        .collect();
    let trigger: Vec<f32> = {
        let t = normals(rng, d);
        let norm = t.iter().map(|v| v * v).sum::<f32>().sqrt();
        t.iter().map(|v| v / norm).collect()
    };
    let mut x = vec![0f32; origin.len() * d];
    for (i, row) in x.chunks_exact_mut(d).enumerate() {
        let c = origin[i];
        let g = normals(rng, rank);
        let noise = normals(rng, d);
        let target = labels[i] as usize;
        for j in 0..d {
            let shape: f32 = (0..rank).map(|r| factors[c][j * rank + r] * g[r]).sum();
            row[j] = if triggered[i] {
                // Triggered record: the target class's position plus a trigger shift, with the
                // source class's shape at a reduced spread (the trigger dominates the activation).
                means[target][j]
                    + strength as f32 * scales[target] * trigger[j]
                    + 0.6 * (shape + scales[c] * 0.5 * noise[j])
            } else {
                means[c][j] + shape + scales[c] * 0.5 * noise[j]
            };
        }
    }
    x
}

/// Inputs to the ReLU network: `p`-dim class blobs; the trigger sets `TRIGGER_WIDTH` inputs high.
const INPUT_DIM: usize = 32;
const TRIGGER_WIDTH: usize = 3;
/// Training epochs of the ReLU network (also the length of each record's loss trajectory).
pub const EPOCHS: usize = 8;

/// The ReLU world: the input distribution, the trigger, and the network trained on it, kept so
/// an evaluation can retrain on the records a scan kept and measure whether the backdoor survives.
pub struct ReluWorld {
    centres: Vec<Vec<f32>>,
    spread: Vec<f32>,
    trigger_value: f32,
    /// Inputs of every record, `n * INPUT_DIM`.
    inputs: Vec<f32>,
    labels: Vec<i64>,
    target: Option<usize>,
    hidden: usize,
}

/// A `p -> h (ReLU) -> c (softmax)` network.
struct Net {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    p: usize,
    h: usize,
    c: usize,
}

impl Net {
    fn init(rng: &mut Xoshiro256PlusPlus, p: usize, h: usize, c: usize) -> Net {
        let w1 = normals(rng, h * p)
            .iter()
            .map(|v| v * (2.0 / p as f32).sqrt())
            .collect();
        let w2 = normals(rng, c * h)
            .iter()
            .map(|v| v * (1.0 / h as f32).sqrt())
            .collect();
        Net {
            w1,
            b1: vec![0.0; h],
            w2,
            b2: vec![0.0; c],
            p,
            h,
            c,
        }
    }

    fn hidden(&self, u: &[f32], out: &mut [f32]) {
        let p = self.p;
        for (j, o) in out.iter_mut().enumerate() {
            *o = (self.b1[j]
                + self.w1[j * p..(j + 1) * p]
                    .iter()
                    .zip(u)
                    .map(|(a, b)| a * b)
                    .sum::<f32>())
            .max(0.0);
        }
    }

    fn logits(&self, hidden: &[f32], out: &mut [f32]) {
        let h = self.h;
        for (k, o) in out.iter_mut().enumerate() {
            *o = self.b2[k] + (0..h).map(|j| self.w2[k * h + j] * hidden[j]).sum::<f32>();
        }
    }

    fn predict(&self, u: &[f32]) -> usize {
        let (mut hidden, mut logits) = (vec![0f32; self.h], vec![0f32; self.c]);
        self.hidden(u, &mut hidden);
        self.logits(&hidden, &mut logits);
        (0..self.c)
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap_or(0)
    }

    /// SGD (each record's gradient clipped: [`clip_factor`]) on softmax cross-entropy over the
    /// rows `rows` of `inputs`; `losses` (`n * EPOCHS`) receives each record's loss when it is
    /// visited in each epoch.
    fn train(
        &mut self,
        inputs: &[f32],
        labels: &[i64],
        rows: &[usize],
        rng: &mut Xoshiro256PlusPlus,
        mut losses: Option<&mut Vec<f32>>,
    ) {
        let (p, h, c) = (self.p, self.h, self.c);
        let (lr, epochs) = (0.05f32, EPOCHS);
        let (mut hidden, mut logits, mut backprop) = (vec![0f32; h], vec![0f32; c], vec![0f32; h]);
        let mut order = rows.to_vec();
        for epoch in 0..epochs {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.gen_range(0..=i));
            }
            for &i in &order {
                let u = &inputs[i * p..(i + 1) * p];
                self.hidden(u, &mut hidden);
                self.logits(&hidden, &mut logits);
                let m = logits.iter().cloned().fold(f32::MIN, f32::max);
                let z: f32 = logits.iter().map(|l| (l - m).exp()).sum();
                let y = labels[i] as usize;
                let grad_out: Vec<f32> = (0..c)
                    .map(|k| (logits[k] - m).exp() / z - (k == y) as u8 as f32)
                    .collect();
                if let Some(l) = losses.as_deref_mut() {
                    l[i * EPOCHS + epoch] = z.ln() - (logits[y] - m);
                }
                // Back-propagated to each active hidden unit (before w2 moves).
                for (j, b) in backprop.iter_mut().enumerate() {
                    *b = if hidden[j] > 0.0 {
                        (0..c).map(|k| grad_out[k] * self.w2[k * h + j]).sum()
                    } else {
                        0.0
                    };
                }
                let step = lr * clip_factor(&grad_out, &hidden, &backprop, u);
                for j in 0..h {
                    if hidden[j] <= 0.0 {
                        continue;
                    }
                    let g = backprop[j];
                    for q in 0..p {
                        self.w1[j * p + q] -= step * g * u[q];
                    }
                    self.b1[j] -= step * g;
                }
                for k in 0..c {
                    for j in 0..h {
                        self.w2[k * h + j] -= step * grad_out[k] * hidden[j];
                    }
                    self.b2[k] -= step * grad_out[k];
                }
            }
        }
    }
}

/// Largest norm of one record's gradient (all weights and biases) that SGD applies as it is.
/// Plain SGD at a fixed rate feeds on itself once a unit's activation grows: the larger the
/// activation, the larger the step on the weights that made it. Without a bound, the
/// gradient norm reached 5 000 on 3 000 records per class and NaN (every probability) on
/// 30 000, where early steps measure about 10; training pipelines clip for the same reason.
const MAX_GRADIENT_NORM: f32 = 50.0;

/// The factor (at most 1) that scales one record's gradient down to [`MAX_GRADIENT_NORM`]:
/// `grad_out` the logits' gradient, `hidden` the layer's activations, `backprop` the gradient
/// at each hidden unit, `u` the input.
fn clip_factor(grad_out: &[f32], hidden: &[f32], backprop: &[f32], u: &[f32]) -> f32 {
    let squares = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
    let norm = (squares(grad_out) * (squares(hidden) + 1.0) + squares(backprop) * (squares(u) + 1.0)).sqrt();
    if norm > MAX_GRADIENT_NORM {
        MAX_GRADIENT_NORM / norm
    } else {
        1.0
    }
}

/// What a model retrained on a subset of the records does.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Retrain {
    /// Share of triggered inputs from other classes that the model assigns to the target class.
    pub attack_success: f64,
    /// Accuracy on fresh clean inputs.
    pub clean_accuracy: f64,
}

/// Trainings averaged in one retrain check. One training is a noisy measure: on the unseen
/// ReLU 64 x 3000 seeds, the same 23 kept poison records gave attack success 0.085 or 0.304
/// depending on which four clean records the scan had also removed (SGD's path changes).
const RETRAIN_RUNS: u64 = 3;

impl ReluWorld {
    /// Retrains the network [`RETRAIN_RUNS`] times (fresh weights and order from `seed` and the
    /// run) on the records where `keep` is true; the mean over the runs.
    pub fn retrain(&self, keep: &[bool], seed: u64) -> Retrain {
        let runs: Vec<Retrain> = (0..RETRAIN_RUNS)
            .map(|run| self.retrain_once(keep, seed ^ run.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .collect();
        let mean = |f: fn(&Retrain) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
        Retrain {
            attack_success: mean(|r| r.attack_success),
            clean_accuracy: mean(|r| r.clean_accuracy),
        }
    }

    /// One retraining (fresh weights from `seed`), measured on 2000 fresh inputs: half clean,
    /// half triggered (from non-target classes).
    fn retrain_once(&self, keep: &[bool], seed: u64) -> Retrain {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let (p, c) = (INPUT_DIM, self.centres.len());
        let mut net = Net::init(&mut rng, p, self.hidden, c);
        let rows: Vec<usize> = (0..keep.len()).filter(|&i| keep[i]).collect();
        net.train(&self.inputs, &self.labels, &rows, &mut rng, None);
        let (mut correct, mut hits, mut triggered) = (0usize, 0usize, 0usize);
        let mut u = vec![0f32; p];
        for t in 0..2000 {
            let class = t % c;
            for j in 0..p {
                u[j] = self.centres[class][j] + self.spread[class] * normal(&mut rng);
            }
            if t % 2 == 0 {
                correct += (net.predict(&u) == class) as usize;
            } else if let Some(target) = self.target.filter(|&tg| tg != class) {
                u.iter_mut().take(TRIGGER_WIDTH).for_each(|v| *v = self.trigger_value);
                hits += (net.predict(&u) == target) as usize;
                triggered += 1;
            }
        }
        Retrain {
            attack_success: hits as f64 / triggered.max(1) as f64,
            clean_accuracy: correct as f64 / 1000.0,
        }
    }
}

fn relu(
    spec: &Spec,
    rng: &mut Xoshiro256PlusPlus,
    origin: &[usize],
    labels: &[i64],
    triggered: &[bool],
    copy_of: &[Option<usize>],
    strength: f64,
) -> (Vec<f32>, ReluWorld, Vec<f32>, Vec<f32>) {
    let (p, h, c) = (INPUT_DIM, spec.dim, spec.classes);
    let n = origin.len();
    let centres: Vec<Vec<f32>> = (0..c).map(|_| normals(rng, p)).collect();
    let spread: Vec<f32> = (0..c).map(|_| 0.6 + 0.8 * rng.r#gen::<f32>()).collect();
    // A patch trigger: a few input features pinned to a value no clean record has.
    let trigger_value = 1.5 + strength as f32 * 0.5;
    let mut inputs = vec![0f32; n * p];
    for (i, u) in inputs.chunks_exact_mut(p).enumerate() {
        let k = origin[i];
        for j in 0..p {
            u[j] = centres[k][j] + spread[k] * normal(rng);
        }
        if triggered[i] {
            u.iter_mut().take(TRIGGER_WIDTH).for_each(|t| *t = trigger_value);
        }
    }
    apply_copies(&mut inputs, p, copy_of, 0.01, rng);
    let mut net = Net::init(rng, p, h, c);
    let mut losses = vec![0f32; n * EPOCHS];
    net.train(&inputs, labels, &(0..n).collect::<Vec<_>>(), rng, Some(&mut losses));
    let mut x = vec![0f32; n * h];
    let mut probs = vec![0f32; n * c];
    for (i, row) in x.chunks_exact_mut(h).enumerate() {
        net.hidden(&inputs[i * p..(i + 1) * p], row);
        let out = &mut probs[i * c..(i + 1) * c];
        net.logits(row, out);
        softmax(out);
    }
    let target = match spec.attack {
        Attack::Backdoor { target, .. } => Some(target),
        _ => None,
    };
    (
        x,
        ReluWorld {
            centres,
            spread,
            trigger_value,
            inputs,
            labels: labels.to_vec(),
            target,
            hidden: h,
        },
        probs,
        losses,
    )
}

impl Synthetic {
    /// The ids of the planted records (backdoor, flipped labels, near-copies), in row order.
    pub fn poisoned_ids(&self) -> Vec<i64> {
        (0..self.ids.len())
            .filter(|&i| self.poisoned[i])
            .map(|i| self.ids[i])
            .collect()
    }

    /// The dataset as one Arrow batch: `id`, `label`, `embedding` (FixedSizeList<f32>), `source`,
    /// and for ReLU data `probs` (the network's probabilities) and `loss` (per-epoch losses).
    pub fn to_batch(&self) -> RecordBatch {
        fn vectors(x: &[f32], width: usize) -> arrow_array::FixedSizeListArray {
            let mut b = FixedSizeListBuilder::new(Float32Builder::with_capacity(x.len()), width as i32);
            for row in x.chunks_exact(width) {
                b.values().append_slice(row);
                b.append(true);
            }
            b.finish()
        }
        let emb = vectors(&self.x, self.dim);
        let mut fields = vec![
            Field::new("id", DataType::Int64, false),
            Field::new("label", DataType::Int64, false),
            Field::new("embedding", emb.data_type().clone(), false),
            Field::new("source", DataType::Utf8, false),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.ids.clone())),
            Arc::new(Int64Array::from(self.labels.clone())),
            Arc::new(emb),
            Arc::new(StringArray::from(self.sources.clone())),
        ];
        let n = self.ids.len().max(1);
        for (name, values) in [("probs", &self.probs), ("loss", &self.losses)] {
            if let Some(v) = values {
                let array = vectors(v, v.len() / n);
                fields.push(Field::new(name, array.data_type().clone(), false));
                columns.push(Arc::new(array));
            }
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("consistent columns")
    }

    /// Writes the dataset as Parquet (row groups of `row_group_rows`).
    pub fn write_parquet(&self, path: &std::path::Path, row_group_rows: usize) -> Result<(), crate::io::OutputError> {
        write_rows(&self.to_batch(), path, row_group_rows)
    }

    /// Which rows a nightly split calls new: `share` of them, evenly spaced (so every class and
    /// the poison are represented in proportion).
    pub fn new_rows(&self, share: f64) -> Vec<bool> {
        (0..self.ids.len())
            .map(|i| ((i + 1) as f64 * share).floor() > (i as f64 * share).floor())
            .collect()
    }

    /// Writes the rows where `new` is false to `old_path` and the others to `new_path`: a dataset
    /// as it was yesterday, and tonight's addition to it.
    pub fn write_split(
        &self,
        new: &[bool],
        old_path: &std::path::Path,
        new_path: &std::path::Path,
        row_group_rows: usize,
    ) -> Result<(), crate::io::OutputError> {
        let batch = self.to_batch();
        for (path, keep_new) in [(old_path, false), (new_path, true)] {
            let mask = arrow_array::BooleanArray::from(new.iter().map(|&n| n == keep_new).collect::<Vec<_>>());
            let part = arrow_select::filter::filter_record_batch(&batch, &mask).expect("mask of the batch's length");
            write_rows(&part, path, row_group_rows)?;
        }
        Ok(())
    }
}

/// Writes `batch` as Parquet in row groups of `row_group_rows`.
fn write_rows(
    batch: &RecordBatch,
    path: &std::path::Path,
    row_group_rows: usize,
) -> Result<(), crate::io::OutputError> {
    let mut sink = crate::io::ParquetSink::create(path, batch.schema(), &["embedding"])?;
    let mut offset = 0;
    while offset < batch.num_rows() {
        let len = row_group_rows.max(1).min(batch.num_rows() - offset);
        sink.write(&batch.slice(offset, len))?;
        sink.flush()?;
        offset += len;
    }
    sink.commit()
}

/// Detection quality of one scan against the answer key.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Metrics {
    /// AUROC of `suspicion` for poisoned vs clean records (`None` without poison).
    pub auroc: Option<f64>,
    /// Share of poisoned records quarantined.
    pub recall: f64,
    /// Quarantined poisoned / all quarantined (1 when nothing is quarantined).
    pub precision: f64,
    /// Share of clean records quarantined.
    pub false_quarantine: f64,
    /// Share of all records quarantined.
    pub quarantined: f64,
    /// Classes judged attacked (names).
    pub attacked: Vec<String>,
    /// AUROC of each detector's raw score inside the classes that hold poison (how well it ranks
    /// poison above the clean records of the same class), by detector name.
    pub detector_auroc: Vec<(String, Option<f64>)>,
    /// For ReLU backdoor cases: the backdoor after retraining on all data, on the scan's clean
    /// output, and with exactly the poison removed.
    pub retrain: Option<RetrainCheck>,
}

/// The retrain check: what matters in the end is whether the backdoor survives in a model
/// retrained on `clean.parquet`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RetrainCheck {
    pub all_data: Retrain,
    pub clean_output: Retrain,
    pub poison_removed: Retrain,
}

/// Extra inputs an evaluation gives the scan.
#[derive(Clone, Copy, Debug, Default)]
pub struct EvalInputs {
    /// Pass the ReLU network's per-epoch losses as `--loss-col loss`.
    pub losses: bool,
    /// Give this many clean records per class as a trusted set (a verified subset of the data).
    pub trusted_per_class: usize,
    /// Skip the retrain check (nine trainings per backdoor run: most of a tuning sweep's time).
    pub no_retrain: bool,
}

/// Writes `spec`'s data to a temp Parquet file, runs read + detectors + decision, and scores the
/// result against the answer key.
pub fn evaluate(spec: &Spec, config: &crate::pipeline::ScanConfig) -> Result<Metrics, crate::Error> {
    evaluate_with(spec, config, EvalInputs::default())
}

/// [`evaluate`] with extra inputs.
pub fn evaluate_with(
    spec: &Spec,
    config: &crate::pipeline::ScanConfig,
    inputs: EvalInputs,
) -> Result<Metrics, crate::Error> {
    let data = generate(spec);
    let dir = tempfile::tempdir().map_err(|source| crate::io::OutputError::Io {
        path: "tempdir".into(),
        source,
    })?;
    let path = dir.path().join("data.parquet");
    data.write_parquet(&path, 10_000)?;
    let mut config = config.clone();
    config.inputs = vec![path];
    if inputs.losses && data.losses.is_some() {
        config.read.loss_col = Some("loss".into());
    }
    if inputs.trusted_per_class > 0 {
        // The first clean records of each class (the poison sits at the end of its class).
        let mut taken = vec![0usize; spec.classes];
        let rows: Vec<u32> = (0..data.ids.len())
            .filter(|&i| {
                let c = data.labels[i] as usize;
                let take = !data.poisoned[i] && taken[c] < inputs.trusted_per_class;
                taken[c] += take as usize;
                take
            })
            .map(|i| i as u32)
            .collect();
        let batch = data.to_batch();
        let trusted = arrow_select::take::take_record_batch(&batch, &arrow_array::UInt32Array::from(rows))
            .expect("rows in range");
        let trusted_path = dir.path().join("trusted.parquet");
        let mut sink = crate::io::ParquetSink::create(&trusted_path, trusted.schema(), &["embedding"])?;
        sink.write(&trusted)?;
        sink.commit()?;
        config.trusted = vec![trusted_path];
    }
    let dataset = crate::io::read_dataset(&config.inputs, &config.read)?;
    let analysis = crate::pipeline::analyse(&dataset, &config, &crate::progress::NoProgress)?;
    let mut m = metrics(&data.poisoned, &analysis.decision, &dataset.classes);
    let poisoned_class: Vec<bool> = {
        let mut has = vec![false; dataset.classes.len()];
        (0..dataset.rows())
            .filter(|&g| data.poisoned[g])
            .for_each(|g| has[dataset.labels[g] as usize] = true);
        (0..dataset.rows()).map(|g| has[dataset.labels[g] as usize]).collect()
    };
    m.detector_auroc = analysis
        .columns
        .names
        .iter()
        .zip(&analysis.columns.values)
        .map(|(name, values)| {
            let rows: Vec<usize> = (0..dataset.rows())
                .filter(|&g| poisoned_class[g] && values[g].is_some())
                .collect();
            let scores: Vec<f64> = rows.iter().map(|&g| values[g].unwrap_or(0.0) as f64).collect();
            let truth: Vec<bool> = rows.iter().map(|&g| data.poisoned[g]).collect();
            (name.clone(), crate::stats::auroc(&scores, &truth))
        })
        .collect();
    if let (Some(world), Attack::Backdoor { .. }, false) = (&data.world, spec.attack, inputs.no_retrain) {
        let retrain_seed = spec.seed ^ 0x5eed;
        let kept: Vec<bool> = analysis.decision.quarantined.iter().map(|q| !q).collect();
        let clean: Vec<bool> = data.poisoned.iter().map(|p| !p).collect();
        m.retrain = Some(RetrainCheck {
            all_data: world.retrain(&vec![true; kept.len()], retrain_seed),
            clean_output: world.retrain(&kept, retrain_seed),
            poison_removed: world.retrain(&clean, retrain_seed),
        });
    }
    Ok(m)
}

/// Quality of a decision against `poisoned` (by global row).
pub fn metrics(poisoned: &[bool], decision: &crate::score::Decision, classes: &[String]) -> Metrics {
    let n = poisoned.len();
    let n_poison = poisoned.iter().filter(|&&p| p).count();
    let q = &decision.quarantined;
    let tp = (0..n).filter(|&i| q[i] && poisoned[i]).count();
    let fp = (0..n).filter(|&i| q[i] && !poisoned[i]).count();
    Metrics {
        auroc: crate::stats::auroc(&decision.suspicion, poisoned),
        recall: if n_poison > 0 { tp as f64 / n_poison as f64 } else { 1.0 },
        precision: if tp + fp > 0 { tp as f64 / (tp + fp) as f64 } else { 1.0 },
        false_quarantine: fp as f64 / (n - n_poison).max(1) as f64,
        quarantined: (tp + fp) as f64 / n as f64,
        attacked: decision
            .verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| v.as_ref().is_some_and(|v| v.attacked))
            .map(|(c, _)| classes[c].clone())
            .collect(),
        detector_auroc: Vec::new(),
        retrain: None,
    }
}

/// The generated network's own softmax (libm's `exp`, summed in order): the generator's outputs,
/// the committed sample data's `probs` among them, stay as they were when the scan's surrogate
/// changed its own (`influence::softmax::softmax_rows`).
fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    row.iter_mut().for_each(|v| {
        *v = (*v - max).exp();
        sum += *v;
    });
    row.iter_mut().for_each(|v| *v /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_gradient_is_scaled_down_to_the_bound_and_no_further() {
        // A 2-unit, 2-class network on 3 inputs; the record's whole gradient, written out: w2
        // (grad_out x hidden), b2 (grad_out), w1 (backprop x input), b1 (backprop).
        let gradient_norm = |grad_out: &[f32], hidden: &[f32], backprop: &[f32], u: &[f32]| {
            let mut all: Vec<f32> = Vec::new();
            grad_out.iter().for_each(|g| all.extend(hidden.iter().map(|h| g * h)));
            all.extend(grad_out);
            backprop.iter().for_each(|b| all.extend(u.iter().map(|x| b * x)));
            all.extend(backprop);
            all.iter().map(|v| v * v).sum::<f32>().sqrt()
        };
        let (grad_out, u) = ([0.6f32, -0.6], [2.0f32, -1.0, 3.0]);
        // Applied as it is below the bound.
        let (hidden, backprop) = ([1.0f32, 0.0], [0.5f32, 0.0]);
        assert!(gradient_norm(&grad_out, &hidden, &backprop, &u) < MAX_GRADIENT_NORM);
        assert_eq!(clip_factor(&grad_out, &hidden, &backprop, &u), 1.0);
        // Above it (every term of the same order), scaled to exactly the bound.
        let (hidden, backprop) = ([80.0f32, 60.0], [16.0f32, -12.0]);
        let norm = gradient_norm(&grad_out, &hidden, &backprop, &u);
        let factor = clip_factor(&grad_out, &hidden, &backprop, &u);
        assert!(norm > 2.0 * MAX_GRADIENT_NORM, "{norm}");
        assert!((factor * norm - MAX_GRADIENT_NORM).abs() < 1e-3, "{}", factor * norm);
    }
}
