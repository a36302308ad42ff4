//! Shared shift: a handful of a class's records moved together along a direction the rest of the
//! class does not vary along.
//!
//! Why: a backdoor of 1% (5 records in 500) adds too little variance to own a principal
//! direction, so the class's spectrum, a 2-means split and SPECTRE's top-k whitened space all
//! miss it (its share times its squared distance stays under the noise edge, Tran et al. 2018).
//! Yet every poisoned record carries the trigger's shift: in the class's whitened space each one
//! stands far out along the mean direction of the *others*, while a clean record's place along a
//! direction fitted on other records is ordinary. That leave-one-out test is what this detector
//! asks: for each record, its most co-directional partners (cosines of whitened vectors), pruned
//! to the group whose weakest member stands furthest out along the others' mean direction, in
//! units of the rest of the class's spread along it (`Grams::leave_one_out`).
//!
//! Measured on generated dense classes (64 dims x 500, tuning seeds 11-40): clean classes'
//! best groups of 4 or more stood out by 3.4-4.5, 1% backdoors' (4-5 records, all poison) by
//! 4.9-7.3. A class with fewer than `MIN_RECORDS_PER_DIM` records per dimension is searched
//! too (`FEW_PER_DIM`: harder shrinkage, groups of 3), down to one record per two dimensions.
//! Asked only of dense classes (a ReLU layer's sparse classes have rules of their own, and
//! natural co-directional clumps of records with the same few units on: searched by direction,
//! clean generated classes' groups of 3 stood out by up to 10.5) and at most `MAX_WORK` (the
//! partner search is quadratic in the class): larger classes are left to SPECTRE, whose signal
//! sharpens as the class grows. Nor are classes with heavy tails (`MAX_EXCESS_KURTOSIS`), and
//! discrete coordinates are left out of the search (`MIN_DISTINCT_VALUES`): along both, records
//! stand out together by construction. Records closer to another class's median
//! than to their own (label flips, boundary inputs) join no group: confident learning and the
//! distance analysis speak for them. It keeps no fit: an incremental scan searches tonight's class
//! again, yesterday's records and tonight's together, as a full scan would.
//!
//! Where records are few per dimension it also asks which records lie off the shell the class's
//! whitened lengths concentrate on (`off_the_shell`): 3 poisoned records whose source classes
//! spread more or less than the target share too little direction for a group (1% backdoors at
//! 256 dims x 300: half the tuning runs) but sit 5-19 robust z inside or outside that shell.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::activation_clustering::dist;
use super::linalg::{mul_abt, principal_by_moments, project, span_by_gram};
use super::{ClassScores, ClassSignal, ClassView, DetectError, Detector, Grouping, Stat};
use crate::stats::dot;

/// The detector's name, in scores and reasons.
pub const NAME: &str = "shared_shift";
/// Records per dimension from which a class is searched as [`MANY_PER_DIM`]; counted among the
/// records the whitening is fitted on.
const MIN_RECORDS_PER_DIM: usize = 5;
/// At least this many such records in any class asked, so the rest of a group of up to
/// [`PARTNERS`] + 1 records always holds dozens.
const MIN_KEPT: usize = 50;
/// Dimensions per kept record above which a class is not asked at all: measured down to 300
/// records at 512 dims; at 2 048 a 1% backdoor of 3 records is left to the other detectors (its
/// shift is small against the chance cosines there; they found 14 of its 15 records on unseen
/// seeds 1000-1004).
const MAX_DIMS_PER_RECORD: usize = 2;
/// Largest class asked, as records^2 x dimensions (the partner search's multiply-adds): 3 000
/// records at 64 dimensions, 1 530 at 256, 1 080 at 512. The clean classes' standouts grow with
/// the class (a numpy copy on isotropic classes: 3.5-4.1 at 500 records, 4.3-4.7 at 5 000), and
/// the bound was measured up to 3 000. About 0.15 s of one core per class there.
const MAX_WORK: f64 = 6e8;

/// How a class is searched, by how many records it has per dimension.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Regime {
    /// Share of the mean eigenvalue added to every eigenvalue before whitening, so directions the
    /// class barely varies along are not blown up into noise.
    shrinkage: f64,
    /// Fewest records in a group: a pair or three stand out together by chance too often where
    /// groups of four can be asked.
    min_group: usize,
    /// Above this a group is beyond what the measured clean classes reached.
    clean_bound: f64,
}

/// [`MIN_RECORDS_PER_DIM`] or more: the covariance is well estimated. Clean generated classes
/// of 500 x 64 reached 3.4-4.5 (tuning seeds 11-40), 1% backdoors of 5 records 4.9-7.3.
const MANY_PER_DIM: Regime = Regime {
    shrinkage: 0.1,
    min_group: 4,
    clean_bound: 5.0,
};

/// Fewer: the small eigenvalues are noise, so they are shrunk hard (by the mean eigenvalue), and
/// a 1% backdoor of a class of 300 is 3 records, so groups of 3 count. Fewer records than
/// dimensions are whitened in the directions they span (at most n - 1, fewer with copies: the
/// Gram route). Generated classes
/// (tuning seeds 11-40; 128, 256 and 512 dims x 300, 256 x 600; 1 170 classes without poison)
/// reached 4.51; 1% backdoors passed 5.0 in 10, 12, 8 and 19 runs of 30 (a numpy prototype
/// with shrinkage 0.1 and 5 put clean classes and targets closer together).
const FEW_PER_DIM: Regime = Regime {
    shrinkage: 1.0,
    min_group: 3,
    clean_bound: 5.0,
};
/// Largest median excess kurtosis of a class's whitened coordinates (over the records kept) for
/// which it is asked. The bounds were measured on Gaussian-like classes (-0.1 to 0.3, backdoors
/// included); where tails are heavy, a coordinate's few extreme records are co-directional by
/// nature and stand out together like a shift: generated tabular classes (lognormal, count and
/// categorical features; 1.1-11, clean) reached 7-67 and had classes judged attacked in 3 of 6
/// sets, the heavy-tailed Gaussian check (deviations to the power 1.3, times |t(3)| + 0.2) 2.9-5.0.
/// Measured on generated data only: pooled CNN features (dense, skewed) may not be asked.
const MAX_EXCESS_KURTOSIS: f64 = 1.0;
/// A coordinate with fewer distinct values than this among a class's kept records (and more than
/// one) is discrete (counts, categories, flags, a unit that rarely fires): records that share a
/// rare value stand out together along it by construction, so it is left out of the search
/// (report.json: `discrete_coordinates`).
const MIN_DISTINCT_VALUES: usize = 20;

/// Co-directional partners each record starts its group from.
const PARTNERS: usize = 9;
/// A record this close to one of its partners, as a share of the typical distance between two
/// of the class's records in the whitened space, is a copy of it (1% jitter is far under it, a
/// clean record's nearest neighbour far over).
const COPY_DISTANCE: f64 = 0.05;
/// Smallest spread between classes to assume when comparing them (clean classes: 3.4-4.5).
const MIN_SPREAD: f64 = 0.3;
/// A record joins the class's best group when it stands this far out along the group's mean
/// direction (the group did not choose it, so this is an ordinary z for a clean record).
const JOIN_Z: f64 = 4.0;

/// `[detect.shared-shift]` in a pipeline file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct SharedShiftParams {
    /// Run this detector (default true; `--no-shared-shift` turns it off). Its clean bound sits
    /// close above the clean classes measured (generated ones): where a dataset's classes hold
    /// natural rare modes of a few records each, this is the switch.
    pub enabled: bool,
}

impl Default for SharedShiftParams {
    fn default() -> Self {
        SharedShiftParams { enabled: true }
    }
}

pub struct SharedShift;

impl Detector for SharedShift {
    fn name(&self) -> &'static str {
        NAME
    }

    fn score_class(&self, view: &ClassView<'_>) -> Result<ClassScores, DetectError> {
        let (n, dim) = (view.n(), view.dim);
        // No signal, no group; `stats` say why where there is something to say.
        let not_asked = |stats: Vec<Stat>| {
            Ok(ClassScores {
                stats,
                ..ClassScores::scores_only(vec![0.0; n])
            })
        };
        if dim < 2 || super::is_sparse(view.x) || (n as f64) * (n as f64) * (dim as f64) > MAX_WORK {
            return not_asked(Vec::new());
        }
        let eligible = nearest_their_own_class(view);
        // Counted on the records the whitening is fitted on: where most of a class sits nearer
        // another class's median, a few kept records would make any spread look tiny.
        let kept = eligible.iter().filter(|&&e| e).count();
        if kept < MIN_KEPT {
            return not_asked(Vec::new());
        }
        // Discrete coordinates (counts, categories, flags, a unit that rarely fires) are left
        // out: records sharing a rare value stand out together along one by construction.
        let continuous = continuous_coordinates(view.x, dim, &eligible);
        let discrete = Stat {
            name: "discrete_coordinates".into(),
            value: (dim - continuous.len()) as f64,
        };
        let x = if continuous.len() == dim {
            std::borrow::Cow::Borrowed(view.x)
        } else {
            std::borrow::Cow::Owned(
                view.x
                    .chunks_exact(dim)
                    .flat_map(|row| continuous.iter().map(|&j| row[j]))
                    .collect::<Vec<f32>>(),
            )
        };
        let dim = continuous.len();
        let Some(regime) = (dim >= 2).then(|| regime(kept, dim)).flatten() else {
            return not_asked(vec![discrete]);
        };
        let space = Whitened::of(&x, dim, &eligible, regime.shrinkage);
        let tails = space.excess_kurtosis;
        if !tails.is_finite() {
            // Every kept record alike: nothing spreads, nothing to search (and no NaN to report).
            return not_asked(vec![discrete]);
        }
        let tails = Stat {
            name: "whitened_excess_kurtosis".into(),
            value: tails,
        };
        if tails.value > MAX_EXCESS_KURTOSIS {
            // Not asked, but the report says how heavy the tails were.
            return not_asked(vec![discrete, tails]);
        }
        let (best, joins) = strongest_group_of_each(&space, &eligible, regime.min_group);
        // Only where records are few per dimension: that is where the shell was measured.
        // Copies are left out (`joins`): at about a record per dimension a record counted twice
        // pulls the whitening toward itself, and both copies fall far inside the shell.
        let shell = (regime == FEW_PER_DIM).then(|| off_the_shell(&space, &joins));
        let scores: Vec<f32> = best
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let standout = b.as_ref().map_or(0.0, |(z, _)| z.max(0.0));
                let off_shell = shell.as_ref().map_or(0.0, |s| s.z[i]);
                standout.max(off_shell) as f32
            })
            .collect();
        let top = best.iter().flatten().max_by(|a, b| a.0.total_cmp(&b.0)).cloned();
        let (group_standout, group_members) = match top {
            Some((z, group)) => (z, joined(&space, &group, &joins)),
            None => (0.0, Vec::new()),
        };
        let off_shell_second = shell.as_ref().map_or(0.0, |s| s.second);
        let off_shell_members: Vec<usize> = match &shell {
            Some(s) if s.second > regime.clean_bound => (0..n).filter(|&i| s.z[i] >= JOIN_Z).collect(),
            _ => Vec::new(),
        };
        // The suspect records: the group's, and those off the shell where it passed the bound
        // (the shell's alone lost records a passing group had found). Where only the shell
        // passed, a group under the bound joins only when half its records or more are off the
        // shell too (one population: the third poisoned record a little less off it); otherwise
        // it is a clean class's ordinary best and stays out.
        let shared = group_members.iter().filter(|i| off_shell_members.contains(i)).count();
        let group_joins =
            off_shell_members.is_empty() || group_standout > regime.clean_bound || 2 * shared >= group_members.len();
        let group_records = group_members.len();
        let joining_group = if group_joins { group_members } else { Vec::new() };
        let mut members = joining_group.clone();
        members.extend(&off_shell_members);
        members.sort_unstable();
        members.dedup();
        let value = group_standout.max(off_shell_second);
        let mut cluster = vec![0u8; n];
        members.iter().for_each(|&i| cluster[i] = 1);
        // Each member's reason says which test found it: the group's shift, the shell, or both.
        let mut notes = vec![String::new(); if members.is_empty() { 0 } else { n }];
        for &i in &members {
            let mut found = Vec::new();
            if joining_group.contains(&i) {
                found.push(format!(
                    "moved with the group along its shift (group stands {group_standout:.1} out)"
                ));
            }
            if let Some(s) = shell.as_ref().filter(|_| off_shell_members.contains(&i)) {
                let side = if s.longer[i] { "outside" } else { "inside" };
                found.push(format!(
                    "whitened length {:.1} robust z {side} the class's shell",
                    s.z[i]
                ));
            }
            notes[i] = found.join(", ");
        }
        Ok(ClassScores {
            scores,
            stats: vec![
                Stat {
                    name: "best_group_standout".into(),
                    value: group_standout,
                },
                Stat {
                    name: "best_group_records".into(),
                    value: group_records as f64,
                },
                Stat {
                    name: "off_shell_second_z".into(),
                    value: off_shell_second,
                },
                Stat {
                    name: "off_shell_records".into(),
                    value: off_shell_members.len() as f64,
                },
                discrete,
                tails,
            ],
            signal: Some(ClassSignal::new(value, regime.clean_bound, MIN_SPREAD)),
            grouping: Some(Grouping {
                may_be_part: true,
                notes,
                ..Grouping::whole(cluster)
            }),
            record_level: None,
            flagged: Vec::new(),
            fit: None,
        })
    }
}

/// How a class with `kept` records to fit its whitening on, in `dim` dimensions, is searched;
/// `None`: not at all.
fn regime(kept: usize, dim: usize) -> Option<Regime> {
    if kept < MIN_KEPT || kept * MAX_DIMS_PER_RECORD < dim {
        None
    } else if kept >= MIN_RECORDS_PER_DIM * dim {
        Some(MANY_PER_DIM)
    } else {
        Some(FEW_PER_DIM)
    }
}

/// The coordinates that do not take between 2 and [`MIN_DISTINCT_VALUES`] - 1 distinct values
/// over the `kept` records (a constant one carries no spread and does no harm), ascending.
fn continuous_coordinates(x: &[f32], dim: usize, kept: &[bool]) -> Vec<usize> {
    (0..dim)
        .into_par_iter()
        .filter(|&j| {
            let mut values: Vec<f32> = kept_rows(x, dim, kept).map(|row| row[j]).collect();
            values.sort_unstable_by(f32::total_cmp);
            values.dedup();
            !(2..MIN_DISTINCT_VALUES).contains(&values.len())
        })
        .collect()
}

/// The median, over the coordinates with any spread, of the excess kurtosis (0 for a Gaussian;
/// NaN when no coordinate spreads), from each coordinate's mean second and fourth powers.
fn median_excess_kurtosis(variance: &[f64], fourth: &[f64]) -> f64 {
    let mut excess: Vec<f64> = variance
        .iter()
        .zip(fourth)
        // Whitened, a coordinate with spread has variance near 1 (under it where shrunk);
        // directions without (rounding noise of rank-deficient features) would let noise pick
        // the median.
        .filter(|(v, _)| **v > 1e-3)
        .map(|(v, f)| f / (v * v) - 3.0)
        .collect();
    excess.sort_unstable_by(f64::total_cmp);
    match excess.len() {
        0 => f64::NAN,
        len => excess[len / 2],
    }
}

/// The rows of row-major `x` (`dim` wide) whose `kept` flag is set.
fn kept_rows<'a, T>(x: &'a [T], dim: usize, kept: &'a [bool]) -> impl Iterator<Item = &'a [T]> {
    x.chunks_exact(dim).zip(kept).filter(|(_, k)| **k).map(|(row, _)| row)
}

/// Per record: whether it sits nearer its own class's median than any other class's.
///
/// Distances to every class's median are n x classes x dim multiply-adds: with hundreds of
/// classes, the scalar loop cost tens of seconds (44 s of the detector's time summed over 500
/// classes of 100 x 2048). So each block of records takes them from one matrix product,
/// |x|^2 - 2 x.m + |m|^2, and only the medians that product puts within [`EXPANDED_BAND`] of the
/// record's own distance are measured exactly: the answer is the exact comparison's.
fn nearest_their_own_class(view: &ClassView<'_>) -> Vec<bool> {
    const BLOCK_ROWS: usize = 256;
    let (dim, own) = (view.dim, view.class);
    let medians: Vec<f32> = view.class_medians.iter().flatten().copied().collect();
    let classes = view.class_medians.len();
    let square = |v: &[f32]| v.iter().map(|&a| a as f64 * a as f64).sum::<f64>();
    let median_squares: Vec<f64> = view.class_medians.iter().map(|m| square(m)).collect();
    view.x
        .par_chunks(BLOCK_ROWS * dim)
        .flat_map_iter(|block| {
            let mut products = vec![0f32; block.len() / dim * classes];
            mul_abt(block, &medians, dim, &mut products);
            let near: Vec<bool> = block
                .chunks_exact(dim)
                .zip(products.chunks_exact(classes))
                .map(|(row, products)| {
                    let own_distance = dist(row, &view.class_medians[own]);
                    let row_square = square(row);
                    let own_square = own_distance as f64 * own_distance as f64;
                    (0..classes).filter(|&c| c != own).all(|c| {
                        let expanded = row_square - 2.0 * products[c] as f64 + median_squares[c];
                        let band = EXPANDED_BAND * (row_square + median_squares[c]);
                        if (expanded - own_square).abs() > band {
                            expanded > own_square
                        } else {
                            dist(row, &medians[c * dim..(c + 1) * dim]) >= own_distance
                        }
                    })
                })
                .collect();
            near
        })
        .collect()
}

/// Relative error (of |x|^2 + |m|^2) within which a distance from the matrix product is checked
/// exactly: the product's own rounding (f32, sums of up to a few thousand terms) is far below it.
const EXPANDED_BAND: f64 = 1e-3;

/// The class in its whitened principal coordinates (eigenvalues shrunk: [`Regime::shrinkage`]),
/// fitted on the records that look like its own (`kept`): six flipped records far out along the
/// trigger's direction would whiten a 1% shift away.
struct Whitened {
    /// `n * dim` row-major, every record, centred on the kept records' mean. `dim` is the
    /// number of principal directions: fewer than the class's dimensions where it has fewer
    /// kept records (the rest carry none of their spread).
    w: Vec<f64>,
    /// Mean square of each coordinate over the kept records (under 1 where the shrinkage damped
    /// it).
    variance: Vec<f64>,
    /// How many records were kept.
    kept: usize,
    dim: usize,
    /// Median excess kurtosis of the coordinates over the kept records ([`median_excess_kurtosis`]).
    excess_kurtosis: f64,
}

impl Whitened {
    fn of(x: &[f32], dim: usize, kept: &[bool], shrinkage: f64) -> Whitened {
        let rows: Vec<f32>;
        let fitted_on = if kept.iter().all(|&k| k) {
            x
        } else {
            rows = kept_rows(x, dim, kept).flatten().copied().collect();
            &rows
        };
        let fitted = fitted_on.len() / dim;
        // Fewer records than dimensions: the Gram route, whose directions (at most n - 1; fewer
        // with copies) are all the class spreads along (the co-moment route would decompose
        // dim x dim for them).
        let basis = (fitted <= dim)
            .then(|| span_by_gram(fitted_on, dim))
            .flatten()
            .unwrap_or_else(|| principal_by_moments(fitted_on, dim, dim));
        let floor = shrinkage * basis.trace / dim as f64;
        let width = basis.eigenvalues.len();
        let scale: Vec<f64> = basis
            .eigenvalues
            .iter()
            .map(|v| 1.0 / (v.max(0.0) + floor).max(1e-300).sqrt())
            .collect();
        let mut w = project(x, dim, &basis.mean, &basis.components, width);
        for row in w.chunks_exact_mut(width) {
            row.iter_mut().zip(&scale).for_each(|(v, s)| *v *= s);
        }
        // Second and fourth moments of each coordinate over the kept records, in one pass.
        let (mut variance, mut fourth) = (vec![0.0; width], vec![0.0; width]);
        for row in kept_rows(&w, width, kept) {
            for (k, v) in row.iter().enumerate() {
                let square = v * v / fitted as f64;
                variance[k] += square;
                fourth[k] += square * v * v;
            }
        }
        Whitened {
            excess_kurtosis: median_excess_kurtosis(&variance, &fourth),
            w,
            variance,
            kept: fitted,
            dim: width,
        }
    }

    fn n(&self) -> usize {
        self.w.len() / self.dim
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.w[i * self.dim..(i + 1) * self.dim]
    }

    /// Where the kept records outside a group lie along unit direction `u`: mean and standard
    /// deviation, from the kept records' moments less the group's `inside` projections (the
    /// group's members are kept records; the whitened coordinates are centred and uncorrelated
    /// over the kept records, so their own are known without a pass).
    fn rest_along(&self, u: &[f64], inside: impl Iterator<Item = f64>) -> (f64, f64) {
        let n = self.kept as f64;
        let all: f64 = u.iter().zip(&self.variance).map(|(a, v)| a * a * v).sum::<f64>() * n;
        let (mut sum, mut squares, mut m) = (0.0, 0.0, 0.0);
        for p in inside {
            sum += p;
            squares += p * p;
            m += 1.0;
        }
        let mean = -sum / (n - m);
        let var = (all - squares) / (n - m) - mean * mean;
        (mean, var.max(1e-12).sqrt())
    }
}

/// How far each record's whitened length is from the class's: in a class of few records per
/// dimension the lengths of its records concentrate on a thin shell, so one far inside or outside
/// it is no ordinary record of the class.
struct OffShell {
    /// Per record, |robust z| of its whitened length among the eligible records' (0 for the rest).
    z: Vec<f64>,
    /// Per record, whether it is longer than the median (outside the shell) or not (inside).
    longer: Vec<bool>,
    /// The second largest: two records off the shell together, as three of a 1% backdoor are.
    second: f64,
}

/// Why: a trigger that dominates its records' activations leaves them their source class's
/// spread, not the target's: inside the target's shell where that spread is smaller, outside
/// it where larger, and a handful of records too few to move the spectrum or form a group of
/// shared direction (generated Gaussian classes of 300 x 256, 1% backdoors, tuning seeds: the
/// poison's partners' standout 1-3 in half the runs, its lengths 5-19 robust z off the shell).
fn off_the_shell(space: &Whitened, eligible: &[bool]) -> OffShell {
    let lengths: Vec<f64> = (0..space.n()).map(|i| dot(space.row(i), space.row(i)).sqrt()).collect();
    let kept: Vec<f64> = lengths
        .iter()
        .zip(eligible)
        .filter(|(_, e)| **e)
        .map(|(l, _)| *l)
        .collect();
    let median = crate::stats::median(&kept);
    let overall = crate::stats::mad_sigma(&kept, median);
    if overall <= 1e-9 * median {
        // Most records one length (copies of one vector, say): no shell to be off.
        return OffShell {
            z: vec![0.0; lengths.len()],
            longer: vec![false; lengths.len()],
            second: 0.0,
        };
    }
    // Each side of the median measured by its own deviations: a class whose lengths are skewed
    // (a long tail of long records, as pooled features have) must not call its tail off-shell.
    // At least half the overall deviation, so a side of ties cannot shrink to nothing.
    let spread_of = |longer: bool| {
        let side: Vec<f64> = kept.iter().copied().filter(|&l| (l > median) == longer).collect();
        crate::stats::mad_sigma(&side, median).max(overall / 2.0)
    };
    let (below, above) = (spread_of(false), spread_of(true));
    let z: Vec<f64> = lengths
        .iter()
        .zip(eligible)
        .map(|(&l, e)| match (e, l > median) {
            (false, _) => 0.0,
            (true, true) => (l - median) / above,
            (true, false) => (median - l) / below,
        })
        .collect();
    // The two largest, in one pass.
    let (_, second) = z.iter().fold(
        (0.0, 0.0),
        |(first, second): (f64, f64), &v| {
            if v > first { (v, first) } else { (first, second.max(v)) }
        },
    );
    let longer = lengths.iter().map(|&l| l > median).collect();
    OffShell { z, longer, second }
}

/// Each eligible record's [`PARTNERS`] most co-directional eligible records (cosine of whitened
/// vectors), by blocks of rows so the cosines never fill an n x n matrix.
fn co_directional_partners(space: &Whitened, eligible: &[bool]) -> Vec<Vec<usize>> {
    const BLOCK: usize = 256;
    let dim = space.dim;
    let unit: Vec<f32> = space
        .w
        .chunks_exact(dim)
        .flat_map(|row| {
            let norm = dot(row, row).sqrt().max(1e-300);
            row.iter().map(move |v| (v / norm) as f32)
        })
        .collect();
    let n = space.n();
    unit.par_chunks(BLOCK * dim)
        .enumerate()
        .flat_map_iter(|(b, block)| {
            let rows = block.len() / dim;
            let mut cosines = vec![0f32; rows * n];
            mul_abt(block, &unit, dim, &mut cosines);
            (0..rows)
                .map(|r| {
                    let i = b * BLOCK + r;
                    if !eligible[i] {
                        return Vec::new();
                    }
                    let row = &cosines[r * n..(r + 1) * n];
                    // The best PARTNERS so far, by cosine, descending: one comparison per record
                    // once it is full.
                    let mut top: Vec<(f32, usize)> = Vec::with_capacity(PARTNERS + 1);
                    for j in (0..n).filter(|&j| j != i && eligible[j]) {
                        if top.len() < PARTNERS || row[j] > top[top.len() - 1].0 {
                            let at = top.partition_point(|&(c, _)| c >= row[j]);
                            top.insert(at, (row[j], j));
                            top.truncate(PARTNERS);
                        }
                    }
                    top.into_iter().map(|(_, j)| j).collect()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A group's weakest member's standout, and the group's records.
type Standout = (f64, Vec<usize>);

/// Per record: the strongest group it starts ([`strongest_group`]; `None` where it may join
/// none), and which records may join groups: those `eligible` that have no copy among their
/// partners. A copy (within [`COPY_DISTANCE`] of the typical distance between two records) is
/// the near-copy detector's: four copies of one record stand out together by about its whitened
/// length, a shift of nothing.
fn strongest_group_of_each(
    space: &Whitened,
    eligible: &[bool],
    min_group: usize,
) -> (Vec<Option<Standout>>, Vec<bool>) {
    let partners = co_directional_partners(space, eligible);
    let typical = (2.0 * space.variance.iter().sum::<f64>()).sqrt();
    let joins: Vec<bool> = (0..space.n())
        .map(|i| {
            eligible[i]
                && partners[i].iter().all(|&j| {
                    let squared: f64 = space
                        .row(i)
                        .iter()
                        .zip(space.row(j))
                        .map(|(a, b)| (a - b).powi(2))
                        .sum();
                    squared.sqrt() >= COPY_DISTANCE * typical
                })
        })
        .collect();
    let best = (0..space.n())
        .into_par_iter()
        .map(|i| {
            let partners = partners[i].iter().copied().filter(|&j| joins[j]);
            let group: Vec<usize> = std::iter::once(i).chain(partners).collect();
            // A standout that is not finite (a degenerate spread) is no group.
            (joins[i] && group.len() >= min_group)
                .then(|| strongest_group(space, group, min_group))
                .filter(|(z, _)| z.is_finite())
        })
        .collect();
    (best, joins)
}

/// From a record and its partners (`group`, the record first), drops the member that stands
/// out least until `min_group` remain; the best stage: (its weakest member's standout, members).
fn strongest_group(space: &Whitened, group: Vec<usize>, min_group: usize) -> Standout {
    let grams = Grams::of(space, &group);
    // Positions in `group` still in the group.
    let mut members: Vec<usize> = (0..group.len()).collect();
    let mut best = (f64::NEG_INFINITY, Vec::new());
    while members.len() >= min_group {
        let standout = grams.leave_one_out(&members, space.kept as f64);
        let (weakest, &least) = standout
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .expect("a group holds records");
        if least > best.0 {
            best = (least, members.iter().map(|&m| group[m]).collect());
        }
        members.remove(weakest);
    }
    best
}

/// The inner products among a candidate group's whitened vectors, plain and weighted by the
/// coordinates' variances: with them every leave-one-out direction, and the spread of the rest
/// of the class along it, costs no pass over the dimensions (the pruning asks up to 7 groups).
struct Grams {
    size: usize,
    /// `size * size`: w_a . w_b.
    plain: Vec<f64>,
    /// `size * size`: sum_k w_ak variance_k w_bk.
    weighted: Vec<f64>,
}

impl Grams {
    fn of(space: &Whitened, group: &[usize]) -> Grams {
        let size = group.len();
        let (mut plain, mut weighted) = (vec![0.0; size * size], vec![0.0; size * size]);
        for a in 0..size {
            for b in a..size {
                let (wa, wb) = (space.row(group[a]), space.row(group[b]));
                let p = dot(wa, wb);
                let q: f64 = wa
                    .iter()
                    .zip(wb)
                    .zip(&space.variance)
                    .map(|((x, y), v)| x * y * v)
                    .sum();
                (plain[a * size + b], plain[b * size + a]) = (p, p);
                (weighted[a * size + b], weighted[b * size + a]) = (q, q);
            }
        }
        Grams { size, plain, weighted }
    }

    /// For each of `members` (positions in the group): how far it stands out along the mean
    /// direction of the *other* members, in standard deviations of the `kept` records outside
    /// the members along that direction (as [`Whitened::rest_along`] measures it).
    fn leave_one_out(&self, members: &[usize], kept: f64) -> Vec<f64> {
        let at = |m: &[f64], a: usize, b: usize| m[a * self.size + b];
        // Each member's inner product with the members' sum, plain and weighted.
        let with_sum = |m: &[f64], a: usize| members.iter().map(|&b| at(m, a, b)).sum::<f64>();
        let plain_sums: Vec<f64> = members.iter().map(|&a| with_sum(&self.plain, a)).collect();
        let weighted_sums: Vec<f64> = members.iter().map(|&a| with_sum(&self.weighted, a)).collect();
        let (plain_total, weighted_total) = (plain_sums.iter().sum::<f64>(), weighted_sums.iter().sum::<f64>());
        let inside = members.len() as f64;
        members
            .iter()
            .enumerate()
            .map(|(jj, &j)| {
                // v = sum - w_j, the others' direction.
                let length = (plain_total - 2.0 * plain_sums[jj] + at(&self.plain, j, j))
                    .max(1e-300)
                    .sqrt();
                let along = |gg: usize, g: usize| (plain_sums[gg] - at(&self.plain, g, j)) / length;
                let (sum, squares) = members.iter().enumerate().fold((0.0, 0.0), |(s, q), (gg, &g)| {
                    let p = along(gg, g);
                    (s + p, q + p * p)
                });
                let all =
                    kept * (weighted_total - 2.0 * weighted_sums[jj] + at(&self.weighted, j, j)) / (length * length);
                let mean = -sum / (kept - inside);
                let sd = ((all - squares) / (kept - inside) - mean * mean).max(1e-12).sqrt();
                (along(jj, j) - mean) / sd
            })
            .collect()
    }
}

/// The best group and every eligible record standing [`JOIN_Z`] out along its mean direction.
fn joined(space: &Whitened, group: &[usize], eligible: &[bool]) -> Vec<usize> {
    let dim = space.dim;
    let mut u = vec![0.0; dim];
    for &g in group {
        u.iter_mut().zip(space.row(g)).for_each(|(s, v)| *s += v);
    }
    let norm = dot(&u, &u).sqrt().max(1e-300);
    u.iter_mut().for_each(|v| *v /= norm);
    let (mean, sd) = space.rest_along(&u, group.iter().map(|&g| dot(space.row(g), &u)));
    (0..space.n())
        .filter(|&i| group.contains(&i) || (eligible[i] && (dot(space.row(i), &u) - mean) / sd >= JOIN_Z))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn normal(rng: &mut Xoshiro256PlusPlus) -> f64 {
        // Box-Muller: the tests need no distribution crate.
        let (a, b): (f64, f64) = (rng.r#gen::<f64>().max(1e-12), rng.r#gen());
        (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
    }

    /// The matrix-product distances give the scalar loop's answer, ties included: records
    /// exactly as far from another class's median as from their own stay their own class's.
    #[test]
    fn nearest_their_own_class_answers_as_the_exact_distances_do() {
        let (dim, classes) = (37, 12);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let mut x: Vec<Vec<f32>> = (0..classes)
            .map(|c| {
                (0..300 * dim)
                    .map(|j| (normal(&mut rng) * 3.0) as f32 + (c * j % 5) as f32)
                    .collect()
            })
            .collect();
        // A record halfway between two medians: the two distances tie.
        let medians: Vec<Vec<f32>> = x
            .iter()
            .map(|x| super::super::coordinate_median(x, dim, &(0..300).collect::<Vec<_>>()))
            .collect();
        let halfway: Vec<f32> = medians[0].iter().zip(&medians[1]).map(|(a, b)| (a + b) / 2.0).collect();
        x[0][..dim].copy_from_slice(&halfway);
        for class in 0..classes {
            let (fast, exact) = super::super::with_view(&x, dim, class, |view| {
                let exact: Vec<bool> = view
                    .x
                    .chunks_exact(dim)
                    .map(|row| {
                        let own = dist(row, &view.class_medians[class]);
                        (0..classes).all(|c| c == class || dist(row, &view.class_medians[c]) >= own)
                    })
                    .collect();
                (nearest_their_own_class(view), exact)
            });
            assert_eq!(fast, exact, "class {class}");
            assert!(
                exact.iter().any(|&e| !e) && exact.iter().any(|&e| e),
                "class {class}: both kinds of record"
            );
        }
    }

    /// `n` records in `dim` dimensions, isotropic unit noise; the last `shifted` moved by
    /// `shift` along the first axis.
    fn class(n: usize, dim: usize, shifted: usize, shift: f64, seed: u64) -> Vec<f32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        (0..n * dim)
            .map(|v| {
                let (i, j) = (v / dim, v % dim);
                let moved = if i >= n - shifted && j == 0 { shift } else { 0.0 };
                (normal(&mut rng) + moved) as f32
            })
            .collect()
    }

    fn group_of(x: &[f32], dim: usize) -> (f64, Vec<usize>) {
        let n = x.len() / dim;
        let eligible = vec![true; n];
        let regime = regime(n, dim).expect("the class is asked");
        let space = Whitened::of(x, dim, &eligible, regime.shrinkage);
        let (best, joins) = strongest_group_of_each(&space, &eligible, regime.min_group);
        let best = best.into_iter().flatten().max_by(|a, b| a.0.total_cmp(&b.0)).unwrap();
        let members = joined(&space, &best.1, &joins);
        (best.0, members)
    }

    /// In a [`class`] with its last `shifted` records moved by `shift`, those records are the
    /// group, standing out over `bound`.
    fn assert_shifted_records_are_the_group(n: usize, dim: usize, shifted: usize, shift: f64, bound: f64) {
        let (standout, members) = group_of(&class(n, dim, shifted, shift, 7), dim);
        assert!(standout > bound, "standout {standout}");
        assert_eq!(members, (n - shifted..n).collect::<Vec<_>>());
    }

    #[test]
    fn five_records_shifted_together_stand_out_and_are_the_group() {
        assert_shifted_records_are_the_group(400, 32, 5, 8.0, MANY_PER_DIM.clean_bound);
    }

    #[test]
    fn classes_are_searched_by_how_many_records_they_have_per_dimension() {
        assert_eq!(regime(500, 64), Some(MANY_PER_DIM));
        assert_eq!(regime(319, 64), Some(FEW_PER_DIM));
        assert_eq!(regime(300, 512), Some(FEW_PER_DIM));
        assert_eq!(regime(300, 601), None);
        assert_eq!(regime(49, 4), None, "too few records to search at all");
    }

    #[test]
    fn with_fewer_records_than_dimensions_three_shifted_records_stand_out() {
        // 200 records in 256 dimensions (the Gram route), 3 of them moved together: a 1%
        // backdoor's size in a class of 300.
        let (n, dim) = (200, 256);
        assert_shifted_records_are_the_group(n, dim, 3, 12.0, FEW_PER_DIM.clean_bound);
        for seed in 0..3 {
            let (standout, _) = group_of(&class(n, dim, 0, 0.0, 20 + seed), dim);
            assert!(standout < FEW_PER_DIM.clean_bound, "seed {seed}: standout {standout}");
        }
    }

    /// Three records of a class of 300 x 256 with a third of the class's spread (a trigger
    /// that dominates its records) and no shared direction: no group, but off the shell, far
    /// over the bound, which clean classes of that shape stay under.
    #[test]
    fn records_far_inside_the_shell_are_off_it_where_no_group_stands_out() {
        let (n, dim) = (300, 256);
        let off_shell_of = |x: &[f32]| {
            let eligible = vec![true; n];
            let space = Whitened::of(x, dim, &eligible, FEW_PER_DIM.shrinkage);
            off_the_shell(&space, &eligible)
        };
        let mut x = class(n, dim, 0, 0.0, 5);
        x[(n - 3) * dim..].iter_mut().for_each(|v| *v /= 3.0);
        let (standout, _) = group_of(&x, dim);
        assert!(standout < FEW_PER_DIM.clean_bound, "standout {standout}");
        let shell = off_shell_of(&x);
        assert!(shell.second > 2.0 * FEW_PER_DIM.clean_bound, "second {}", shell.second);
        // Past the bound, the three alone (a clean record may join them at JOIN_Z: 4 is within
        // a clean class's reach).
        let off: Vec<usize> = (0..n).filter(|&i| shell.z[i] > FEW_PER_DIM.clean_bound).collect();
        assert_eq!(off, (n - 3..n).collect::<Vec<_>>());
        for seed in 0..3 {
            let shell = off_shell_of(&class(n, dim, 0, 0.0, 30 + seed));
            assert!(
                shell.second < FEW_PER_DIM.clean_bound,
                "seed {seed}: second {}",
                shell.second
            );
        }
        // Most of the class one vector (a default embedding for missing inputs, say): the
        // median length's deviation is 0, and no record is called off a shell of nothing.
        let mut x = class(n, dim, 0, 0.0, 6);
        let first = x[..dim].to_vec();
        x.chunks_exact_mut(dim)
            .take(n * 3 / 5)
            .for_each(|row| row.copy_from_slice(&first));
        let shell = off_shell_of(&x);
        assert_eq!(shell.second, 0.0);
        assert!(shell.z.iter().all(|&z| z == 0.0));
    }

    /// Records found off the shell say so in their reason (the group is the detector's one
    /// suspect group, so its reason alone would not tell the ways apart).
    #[test]
    fn records_off_the_shell_say_which_side_in_their_reason() {
        let (n, dim) = (300, 256);
        let mut x = class(n, dim, 0, 0.0, 5);
        x[(n - 3) * dim..].iter_mut().for_each(|v| *v /= 3.0);
        let scores = scores_beside_another(x, dim);
        let grouping = scores.grouping.expect("a grouping");
        assert_eq!(grouping.notes.len(), n);
        for i in 0..n {
            let member = grouping.cluster[i] == 1;
            assert_eq!(
                member,
                !grouping.notes[i].is_empty(),
                "record {i}: {:?}",
                grouping.notes[i]
            );
        }
        for i in n - 3..n {
            assert_eq!(grouping.cluster[i], 1, "record {i}");
            assert!(
                grouping.notes[i].contains("robust z inside the class's shell"),
                "record {i}: {}",
                grouping.notes[i]
            );
        }
    }

    /// A record counted twice, at about a record per dimension, pulls the whitening toward
    /// itself: both copies fall far inside the shell. They are the near-copy detector's, so the
    /// shell is measured on the records that may join groups (copies left out).
    #[test]
    fn copies_are_not_called_off_the_shell() {
        let (n, dim) = (300, 512);
        let mut x = class(n, dim, 0, 0.0, 8);
        for (from, to) in [(0, 1), (2, 3)] {
            let row = x[from * dim..(from + 1) * dim].to_vec();
            x[to * dim..(to + 1) * dim].copy_from_slice(&row);
        }
        let eligible = vec![true; n];
        let space = Whitened::of(&x, dim, &eligible, FEW_PER_DIM.shrinkage);
        let (_, joins) = strongest_group_of_each(&space, &eligible, FEW_PER_DIM.min_group);
        assert!((0..4).all(|i| !joins[i]), "copies join no group");
        let counted = off_the_shell(&space, &eligible);
        assert!(
            counted.second > FEW_PER_DIM.clean_bound,
            "copies counted: {}",
            counted.second
        );
        let left_out = off_the_shell(&space, &joins);
        assert!(
            left_out.second < FEW_PER_DIM.clean_bound,
            "copies left out: {}",
            left_out.second
        );
    }

    #[test]
    fn the_gram_route_whitens_as_the_co_moment_route_does() {
        // 120 records in 200 dims, two of them copies (the span is then 118 directions): the
        // kept records' whitened inner products are the same both ways.
        let (n, dim) = (120, 200);
        let mut x = class(n, dim, 3, 6.0, 9);
        let copied = x[..dim].to_vec();
        x[dim..2 * dim].copy_from_slice(&copied);
        let kept = vec![true; n];
        let gram = Whitened::of(&x, dim, &kept, FEW_PER_DIM.shrinkage);
        assert_eq!(
            gram.dim,
            n - 2,
            "one direction per record beyond the first, less the copy"
        );
        let basis = principal_by_moments(&x, dim, dim);
        let floor = FEW_PER_DIM.shrinkage * basis.trace / dim as f64;
        let scale: Vec<f64> = basis
            .eigenvalues
            .iter()
            .map(|v| 1.0 / (v.max(0.0) + floor).sqrt())
            .collect();
        let full = project(&x, dim, &basis.mean, &basis.components, dim);
        for (a, b) in [(0, 1), (0, 5), (7, 119), (118, 119)] {
            let direct: f64 = (0..dim)
                .map(|k| full[a * dim + k] * full[b * dim + k] * scale[k] * scale[k])
                .sum();
            let via_gram = dot(gram.row(a), gram.row(b));
            assert!(
                (direct - via_gram).abs() <= 1e-6 * direct.abs().max(1.0),
                "{a},{b}: {direct} vs {via_gram}"
            );
        }
    }

    /// A class's scores beside a second class well apart.
    fn scores_beside_another(x: Vec<f32>, dim: usize) -> ClassScores {
        let mut other = class(300, dim, 0, 0.0, 31);
        other.iter_mut().skip(2).step_by(dim).for_each(|v| *v += 30.0);
        super::super::with_view(&[x, other], dim, 0, |view| SharedShift.score_class(view).unwrap())
    }

    fn stat(scores: &ClassScores, name: &str) -> Option<f64> {
        scores.stats.iter().find(|s| s.name == name).map(|s| s.value)
    }

    #[test]
    fn discrete_coordinates_are_left_out_of_the_search() {
        let dim = 16;
        // A clean class with a rare count (4 on 5 records, 0 elsewhere): along that coordinate
        // they stand out together, as a shift would (by 40, searched). Left out, the class holds
        // no group over the bound.
        let mut x = class(400, dim, 0, 0.0, 32);
        x.iter_mut()
            .skip(1)
            .step_by(dim)
            .enumerate()
            .for_each(|(i, v)| *v = if i < 5 { 4.0 } else { 0.0 });
        let (searched, _) = group_of(&x, dim);
        assert!(
            searched > MANY_PER_DIM.clean_bound,
            "searched, it stands out: {searched}"
        );
        let flagged = scores_beside_another(x, dim);
        assert!(!flagged.signal.unwrap().over_bound());
        assert_eq!(stat(&flagged, "discrete_coordinates"), Some(1.0));
        // A count-like coordinate (5 values) beside continuous ones where 5 records are shifted
        // together: still found, on the continuous ones.
        let mut x = class(400, dim, 5, 10.0, 32);
        x.iter_mut()
            .skip(1)
            .step_by(dim)
            .enumerate()
            .for_each(|(i, v)| *v = (i % 5) as f32);
        let counted = scores_beside_another(x, dim);
        assert!(counted.signal.unwrap().over_bound());
        assert_eq!(stat(&counted, "discrete_coordinates"), Some(1.0));
        let cluster = counted.grouping.unwrap().cluster;
        let members: Vec<usize> = (0..400).filter(|&i| cluster[i] == 1).collect();
        assert_eq!(
            members,
            (395..400).collect::<Vec<_>>(),
            "the records, not the columns, kept"
        );
        // Two coordinates, one of them a count (1-3: no zeros, or the class would be sparse):
        // one is left, too few to search.
        let mut x = class(400, 2, 5, 10.0, 35);
        x.iter_mut()
            .skip(1)
            .step_by(2)
            .enumerate()
            .for_each(|(i, v)| *v = (i % 3 + 1) as f32);
        let one_left = scores_beside_another(x, 2);
        assert!(one_left.signal.is_none());
        assert_eq!(stat(&one_left, "discrete_coordinates"), Some(1.0));
    }

    #[test]
    fn classes_with_heavy_tails_or_no_spread_are_not_asked() {
        let dim = 16;
        // Heavy tails (every value cubed): not asked, and the report says why.
        let x: Vec<f32> = class(400, dim, 5, 10.0, 33).iter().map(|v| v.powi(3)).collect();
        let heavy = scores_beside_another(x, dim);
        assert!(heavy.signal.is_none());
        let kurtosis = stat(&heavy, "whitened_excess_kurtosis").expect("the tails are reported");
        assert!(kurtosis > MAX_EXCESS_KURTOSIS, "{kurtosis}");
        // The same class untouched is asked (its tails are a Gaussian's) and finds them.
        let asked = scores_beside_another(class(400, dim, 5, 10.0, 33), dim);
        assert!(asked.signal.unwrap().over_bound());
        let kurtosis = stat(&asked, "whitened_excess_kurtosis").unwrap();
        assert!(kurtosis.abs() < 0.5, "{kurtosis}");
        // 60 identical records: nothing spreads; no signal, and no NaN in the report.
        let same: Vec<f32> = class(1, dim, 0, 0.0, 34).repeat(60);
        let flat = scores_beside_another(same, dim);
        assert!(flat.signal.is_none());
        assert_eq!(
            stat(&flat, "discrete_coordinates"),
            Some(0.0),
            "constant columns are no counts"
        );
        assert_eq!(stat(&flat, "whitened_excess_kurtosis"), None);
        assert!(flat.stats.iter().all(|s| s.value.is_finite()), "{:?}", flat.stats);
    }

    #[test]
    fn copies_of_one_record_are_no_shift() {
        let (n, dim) = (400, 32);
        let mut x = class(n, dim, 0, 0.0, 5);
        let copied = x[..dim].to_vec();
        for r in 1..6 {
            x[r * dim..(r + 1) * dim].copy_from_slice(&copied);
        }
        let (standout, members) = group_of(&x, dim);
        assert!(standout < MANY_PER_DIM.clean_bound, "standout {standout}");
        assert!(members.iter().all(|&i| i > 5), "no copy in the group: {members:?}");
    }

    #[test]
    fn a_clean_class_holds_no_group_over_the_bound() {
        for seed in 0..3 {
            let (standout, _) = group_of(&class(400, 32, 0, 0.0, seed), 32);
            assert!(standout < MANY_PER_DIM.clean_bound, "seed {seed}: standout {standout}");
        }
    }

    #[test]
    fn records_nearer_another_class_join_no_group_and_the_shifted_ones_are_the_suspect() {
        // Class 0: 400 records, 5 shifted together, and 6 more sitting at class 1's centre
        // (flipped labels: shifted alike too, but their place is another class's).
        let (n, dim) = (400, 32);
        let mut own = class(n, dim, 5, 8.0, 11);
        let other_centre = 30.0;
        let mut other = class(300, dim, 0, 0.0, 12);
        other.iter_mut().step_by(dim).for_each(|v| *v += other_centre);
        for r in 0..6 {
            own[(100 + r) * dim] += other_centre;
        }
        let classes = [own, other];
        let scores = super::super::with_view(&classes, dim, 0, |view| SharedShift.score_class(view).unwrap());
        assert!(scores.signal.unwrap().over_bound());
        let grouping = scores.grouping.unwrap();
        let members: Vec<usize> = (0..n).filter(|&i| grouping.cluster[i] == 1).collect();
        assert_eq!(members, (n - 5..n).collect::<Vec<_>>());
        assert!(
            (100..106).all(|i| scores.scores[i] == 0.0),
            "flipped records score nothing"
        );
    }

    /// The leave-one-out standouts computed directly, dimension by dimension.
    fn leave_one_out(space: &Whitened, group: &[usize]) -> Vec<f64> {
        let dim = space.dim;
        let mut sum = vec![0.0; dim];
        for &g in group {
            sum.iter_mut().zip(space.row(g)).for_each(|(s, v)| *s += v);
        }
        group
            .iter()
            .map(|&j| {
                let mut u: Vec<f64> = sum.iter().zip(space.row(j)).map(|(s, v)| s - v).collect();
                let norm = dot(&u, &u).sqrt().max(1e-300);
                u.iter_mut().for_each(|v| *v /= norm);
                let (mean, sd) = space.rest_along(&u, group.iter().map(|&g| dot(space.row(g), &u)));
                (dot(space.row(j), &u) - mean) / sd
            })
            .collect()
    }

    #[test]
    fn the_grams_give_the_direct_leave_one_out_standouts() {
        let (n, dim) = (300, 16);
        let x = class(n, dim, 6, 5.0, 21);
        let space = Whitened::of(&x, dim, &[true; 300], MANY_PER_DIM.shrinkage);
        let group = vec![3, 296, 297, 298, 299, 40, 7];
        let grams = Grams::of(&space, &group);
        for members in [vec![0, 1, 2, 3, 4, 5, 6], vec![1, 2, 3, 4], vec![0, 2, 5, 6]] {
            let records: Vec<usize> = members.iter().map(|&m| group[m]).collect();
            let direct = leave_one_out(&space, &records);
            let shortcut = grams.leave_one_out(&members, n as f64);
            for (d, s) in direct.iter().zip(&shortcut) {
                assert!((d - s).abs() < 1e-6 * d.abs().max(1.0), "{direct:?} vs {shortcut:?}");
            }
        }
    }

    #[test]
    fn a_class_mostly_nearer_another_class_or_of_one_dimension_is_not_asked() {
        // 80 records in 64 dimensions would be asked, but 35 sit at the other class's centre:
        // 45 kept, under the 50 any search needs.
        let dim = 64;
        let mut own = class(80, dim, 5, 8.0, 13);
        own.iter_mut().step_by(dim).take(35).for_each(|v| *v += 30.0);
        let mut other = class(300, dim, 0, 0.0, 14);
        other.iter_mut().step_by(dim).for_each(|v| *v += 30.0);
        let scores = super::super::with_view(&[own, other], dim, 0, |view| SharedShift.score_class(view).unwrap());
        assert!(scores.signal.is_none() && scores.scores.iter().all(|&s| s == 0.0));
        let line: Vec<f32> = (0..400).map(|i| i as f32).collect();
        let scores = super::super::with_view(&[line.clone(), line], 1, 0, |view| {
            SharedShift.score_class(view).unwrap()
        });
        assert!(scores.signal.is_none());
    }

    #[test]
    fn the_spread_outside_a_group_is_measured_without_it() {
        let x = class(200, 4, 0, 0.0, 3);
        let space = Whitened::of(&x, 4, &[true; 200], MANY_PER_DIM.shrinkage);
        let u = [0.6, 0.8, 0.0, 0.0];
        let group = [3usize, 17, 40];
        let (mean, sd) = space.rest_along(&u, group.iter().map(|&g| dot(space.row(g), &u)));
        let rest: Vec<f64> = (0..200)
            .filter(|i| !group.contains(i))
            .map(|i| dot(space.row(i), &u))
            .collect();
        let m = rest.iter().sum::<f64>() / rest.len() as f64;
        let s = (rest.iter().map(|p| (p - m).powi(2)).sum::<f64>() / rest.len() as f64).sqrt();
        // Equal up to the eigenvectors' rounding (the moments shortcut assumes them exact).
        assert!(
            (mean - m).abs() < 1e-9 && (sd - s).abs() < 1e-6,
            "{mean} {sd} vs {m} {s}"
        );
    }
}
