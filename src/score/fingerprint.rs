//! A trigger's fingerprint shared by a few of a class's records that look like other classes'
//! inputs.
//!
//! Why: a backdoor of 3-5 records in a class of a few hundred moves none of the class's
//! statistics, though its records top the class's SPECTRE ranking. Each looks like an input of
//! the class it came from (its nearest records are mostly another class's), as boundary cases
//! and label noise do too. What only the poison shares is the trigger: take from each record
//! what its nearest records of its source class do not have (the positive part of the
//! difference, a ReLU layer's features switched on), drop the direction toward its own class's
//! centre (what any record near that boundary has), and the poison's leftovers point the same
//! way while boundary cases' point at random. The test is a clique of such records, from
//! several source classes (all-to-one poison comes from many; a boundary or records flipped from
//! one class, from one), making up most of the records that look like other classes' inputs;
//! in small classes a pair passes when both look clearly so ([`PAIR_MIN_SHARE`]). Where SPECTRE's
//! top records hold no such clique, self-influence's are asked next (datasets of up to
//! [`SECOND_PASS_MAX_CLASSES`] classes): a backdoor of a few records can sit below SPECTRE's top
//! while the surrogate struggles to fit it. In classes of a thousand or more
//! ([`SECOND_PASS_MIN_ROWS`]) that clique needs 5 records and a fifth of the marked ones, from 5
//! source classes and at least half the other classes ([`second_pass_clique_passes`]); in
//! smaller ones 3 records, a quarter of the marked, 3 sources, and a fingerprint the rest of the
//! class lacks ([`small_class_clique_passes`]); where a large class's clique fails, its marked
//! records are asked again against other classes' records alone
//! ([`clique_against_other_classes`]). A clique that passes is joined by the class's
//! records whose leftover points its way ([`sharing_the_fingerprint`]): the poison beyond the
//! ranking's top, and the poison that looks like the class's own inputs.
//!
//! Measured on generated ReLU layers (tuning seeds 1-20 and 61-160, 1% backdoors at 64 units x
//! 500 records per class and 128 x 300): of 117 target classes no other rule found, 34 passed,
//! their groups 117 records, every one poison; of 200 clean sets, one had a class pass (3
//! records); of 260 other attacked runs (5%, 15%, faint 5%, label flips), 2 had another class
//! pass (2 clean records quarantined in all). At 3 000 records per class see
//! [`MIN_SHARE_OF_CLASS`].

use super::other_inputs::{self, Found, MIN_GROUP, MIN_OUTSIDER_SHARE, MIN_SOURCES, OtherInputs, most_common};
use super::{ClassEvidence, detector};
use crate::detect::ClassScores;
use crate::stats::{is_live, mad_sigma, median};

/// Records queried per class and pass, highest score of the pass's ranking first ([`Pass`]).
const QUERIES: usize = 48;
/// Cosine between two records' leftovers from which they share a fingerprint.
const MIN_COSINE: f32 = 0.5;
/// Least share of the records that look like other classes' inputs in the clique (which also
/// holds at least [`MIN_GROUP`] records from [`MIN_SOURCES`] source classes, as the group
/// search's)...
const MIN_SHARE_OF_MARKED: f64 = 0.5;
/// ...and 0.5% of the class, but at most [`MAX_CLASS_CLIQUE`] records: boundary cases of a class
/// of thousands form small cliques too. The share, set in 0.2.30 against cliques of 3-15 that
/// the prototype (without the source test) found in clean classes of 3 000, asked 15 records
/// there and let 1% backdoors of 30 go with cliques of up to 14 of their 15 marked records.
const MIN_SHARE_OF_CLASS: f64 = 0.005;
/// With the source test, classes without poison held cliques of at most 3 records at 3 000 per
/// class (tuning: 64 and 128 units, seeds 1-8 and 281-340 clean, 281-340 1%, 281-310 5% / 15% /
/// faint 5%, 281-300 label flips and near-copies; label flips' larger cliques fail the half of
/// the marked records), and none over 3 at 6 000 (seeds 401-415, clean and 1%), while 8
/// backdoors no other rule found held 5-14 (6 at 3 000, one each at 1 500 and 6 000); at 1 500
/// (seeds 401-430) one class beside a 1% backdoor held 5 of 10 and passes (4 records). Classes
/// of 1 000 or fewer keep their share (at 1 000, 3 would pass a class beside a 1% backdoor of 50
/// classes, seed 5012).
const MAX_CLASS_CLIQUE: f64 = 5.0;
/// A clique of two passes where the class share allows it (classes under 400 records) when both
/// look clearly like other classes' inputs: 8 or more of their 10 nearest records other
/// classes'. Why: a 1% backdoor of 3 records (300 per class) leaves a pair when one of its
/// records is not among the marked or shares less of the trigger. Tuning (128 x 300, seeds
/// 201-320): 12 of the 54 1% targets missed passed so (2 of 3 records each), against one class
/// beside a 1% backdoor (2 records) and one more class in 3 of 120 label-flip runs; no clean set
/// (120) and no 5%, 15% or faint run changed. Pairs in those runs had leftover cosines of
/// 0.50-0.85 (targets) and 0.50-0.74 (others): the shares, not the cosine, tell them apart.
const PAIR: usize = 2;
const PAIR_MIN_SHARE: f64 = 0.8;
/// Classes over this many records are not asked (as before 0.2.38, when 0.5% of them exceeded
/// the [`QUERIES`]): cliques in classes that large were not measured, and each costs a search
/// (0.4-0.6 s on a ReLU set of 200 000 x 256 with classes of 20 000).
const MAX_CLASS_ROWS: usize = 9_600;
/// Classes of this many records or more judge the second pass's clique (self-influence's top
/// records, asked where SPECTRE's held no clique; 0.2.40) by [`second_pass_clique_passes`],
/// smaller ones by [`small_class_clique_passes`] (0.2.41). At 3 000 per class a 1% backdoor (30
/// records) can sit at SPECTRE ranks in the hundreds, none among the 48 asked, while
/// self-influence's top 48 hold 5-25 of them (tuning seeds 281-340, the 31 targets missed).
/// Tuning (64 and 128 units, 10 classes: 3 000 per class seeds 281-340 clean and 1%, 281-310
/// 5%, 15% and faint, 281-300 label flips and near-copies; 1 500 per class 401-430 and 6 000
/// per class 401-415, clean and 1%): 13 missed target classes passed (4-16 poisoned records
/// more quarantined each, 30 in one whose clique was grown; 1 clean record more in all), and no
/// other class (without [`SECOND_PASS_MIN_SHARE_OF_MARKED`]: 3 classes in 2 of 40 label-flip
/// runs, and on the unseen grid a clean class beside a 1% backdoor). At 300-500 records (not
/// measured between 500 and 1 000) the second pass, with the first pass's test, judged clean
/// classes attacked (3 of 120 clean sets at 64 x 500) for 6 more of 120 targets: hence a test
/// of their own.
const SECOND_PASS_MIN_ROWS: usize = 1_000;
/// Source classes the second pass's clique must come from, at least: self-influence's top
/// records of a clean class are boundary cases, near one or a few classes. Cliques of 5 or more
/// in classes without poison of the tuning sets above came from 4 at most, but in label-flip
/// runs (flipped records come from every class) from 5, which the share of the marked keeps
/// out; the targets' from 5-6.
const SECOND_PASS_MIN_SOURCES: usize = 5;
/// Least share of the second pass's marked records in its clique: self-influence's top records
/// mostly look like other classes' inputs, so half (the first pass's) is too many, but cliques
/// from 5 sources in classes without a backdoor held 10-14% of them (label-flip runs; one clean
/// class of the unseen grid, 5 of 41), the targets' 21-64%.
const SECOND_PASS_MIN_SHARE_OF_MARKED: f64 = 0.2;
/// In classes under [`SECOND_PASS_MIN_ROWS`] (0.2.41) the second pass's clique passes with
/// [`MIN_GROUP`] records from this many source classes, this share of the marked records, and a
/// fingerprint the rest of the class lacks ([`MIN_STANDOUT`]). Why: at 300-500 records a 1%
/// backdoor of 3-5 often is not atop SPECTRE's ranking but atop self-influence's, whose top
/// records mostly look like other classes' inputs (10-30 marked); there clean classes form
/// cliques of 3-4 from 2-3 sources too, and label-flip runs hold such cliques in most classes
/// (from flipped records, 6-23% of the marked: rare in their class as poison is). Measured on
/// the tuning sets (64 x 500 and 128 x 300, seeds 201-320 clean and 1%, 64 x 500 201-260 5%,
/// 15%, faint 5% and label flips; 128 x 300 201-260 likewise): cliques of 3 or more from 3
/// sources and a quarter of the marked stood out by 0.3-2.2 in the 22 classes without poison
/// that held one, by 3.6-29.8 in 9 target classes no other rule found (2.3-2.9 in 5 others).
/// Classes of 500-1 000 records were not measured; at 3 000 (tried, not used) a clean class's
/// clique stood out by 3.6, so larger classes may need more.
const SMALL_CLASS_MIN_SOURCES: usize = 3;
/// Label-flip runs' cliques made up 6-23% of their marked records (flipped records look like
/// other classes' inputs and are rare in their class, as poison is); the missed targets' 25-80%.
const SMALL_CLASS_MIN_SHARE_OF_MARKED: f64 = 0.25;
/// Least standout ([`standout_along`]) of a small class's second-pass clique along its mean
/// leftover (the trigger's units, which the class's own records leave off): between the 2.2
/// of classes without poison and the 3.6 of the lowest target that passed.
const MIN_STANDOUT: f64 = 3.5;
/// Least cosine between a record's leftover and the clique's mean leftover for it to join the
/// clique (see [`sharing_the_fingerprint`]).
const GROW_MIN_COSINE: f64 = 0.8;
/// ...and least length of its leftover along the fingerprint, as a share of the members'
/// median: a record with nothing beyond its source's records has a leftover of noise, whose
/// direction is chance's (in few dimensions it can point anywhere: the 6-dimension test of
/// `score` had a clean record join without this floor). On the tuning sets it changed nothing;
/// a half would have kept out 5 of the 137 poisoned records that joined in the prototype and
/// none of its 11 clean ones, so a quarter stays well below what poison reaches.
const GROW_MIN_STRENGTH: f64 = 0.25;
/// Records asked whether they share a passed clique's fingerprint. Where more than a quarter of
/// them do, the fingerprint is a direction the class has, not a trigger's, and none joins:
/// cliques of boundary cases in classes without poison (which the tests keep from passing) were
/// shared by up to 146 of 192 (25 of 215 such cliques by 60 or more; 3 000 per class, 64 units,
/// tuning seeds 281-340 1%), the targets' by at most 23 (40 at 6 000 per class, seeds 406 and
/// 410), while the one class a fingerprint judged wrongly in the 1 500-per-class tuning sets
/// (seed 425, 4 records) was shared by 81. A safeguard: such a class quarantines its clique
/// only, not a hundred records more; a 1% backdoor of more than 48 records found by a
/// fingerprint (classes of 5 000 or more) may keep its clique only too.
const GROW_CANDIDATES: usize = 4 * QUERIES;
/// Least records of [`clique_against_other_classes`]'s clique (0.2.43)... Prototyped in Python
/// over the 3 000-per-class tuning sets (64 and 128 units: 1% and clean 281-340, 5% and faint
/// 281-300, label flips 281-300; about 3 600 classes): at 6 records no class without poison
/// passed, at 5 four did (5 records from 4 sources each).
const OTHER_CLASS_MIN_CLIQUE: usize = 6;
/// ...and source classes they come from (and one fewer than half the other classes): backdoors
/// drawn from 4 source classes held cliques of 6-10 from 4, which the second pass's 5 sources
/// kept out. In Rust, on the tuning sets above plus 1 500 and 6 000 per class (seeds 401-430 /
/// 401-415, clean and 1%), near-copies and 15% (281-310): 7 target classes passed (5 at 1 500
/// and 6 000, 2 at 3 000) and one clean class at 6 000 (10 of 35 from 4 sources). The unseen
/// 3 000-per-class grid (seeds 1000-1019) had 3 more classes without poison pass, in runs with
/// a 5% or 15% backdoor elsewhere (6-8 records from 4 sources): all 4 stood out by 1.0-2.5,
/// while 7 of the 10 targets stood out by 3.9-33 (the other 3 by 1.3-2.4): hence
/// [`MIN_STANDOUT`] here too.
const OTHER_CLASS_MIN_SOURCES: usize = 4;
/// Datasets of more (analysed) classes are not asked a second time: half their other classes
/// is 7 source classes or more, more than any target's clique drew on in tuning (5-6; datasets
/// of 11-13 classes were not measured), and the search costs (50 classes x 1 000 x 128 units:
/// 4.5 -> 6.4 s a scan). Small classes keep the limit too, though asking them changed nothing
/// on 50 x 200 x 128 (seeds 11-30 clean and 5%, 7000-7009 clean, 7000-7004 1% and 5%) and
/// 100 x 100 x 128 sets (7000-7004 clean): with that many classes self-influence's top 48 mark
/// 16-44 records and cliques of 3-7 are under a quarter of them, targets' too (standouts of
/// 3.8-16.5 against up to 4.0 for classes without poison: no margin to loosen the quarter).
const SECOND_PASS_MAX_CLASSES: usize = 13;

/// Class `at`'s records sharing a trigger's fingerprint (with their outsiders' other-label
/// share) and the pass that found them, if they pass the tests above; `None` too without
/// vectors or SPECTRE. `evidence` holds the analysed classes (the ones skipped as too small are
/// not in it).
pub(super) fn trigger_group(evidence: &[ClassEvidence<'_>], at: usize, names: &[&str]) -> Option<(OtherInputs, Pass)> {
    let e = &evidence[at];
    let spectre = detector(e, names, "spectre")?;
    if e.geometry.is_none() || e.rows.len() > MAX_CLASS_ROWS {
        return None;
    }
    if let Some(group) = clique_among(evidence, at, names, spectre, Pass::Spectre) {
        return Some((group, Pass::Spectre));
    }
    if evidence.len() > SECOND_PASS_MAX_CLASSES {
        return None;
    }
    let influence = detector(e, names, "self_influence")?;
    clique_among(evidence, at, names, influence, Pass::SelfInfluence).map(|group| (group, Pass::SelfInfluence))
}

/// Which records a search asks, and so which test its clique must pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Pass {
    /// SPECTRE's top records; the clique passes [`clique_passes`].
    Spectre,
    /// Self-influence's top records, where SPECTRE's held no clique (datasets of up to
    /// [`SECOND_PASS_MAX_CLASSES`] classes); the clique passes [`second_pass_clique_passes`] in
    /// classes of [`SECOND_PASS_MIN_ROWS`] or more, [`small_class_clique_passes`] below.
    SelfInfluence,
}

impl Pass {
    /// The ranking it asks, for reasons.
    pub(super) fn ranking(self) -> &'static str {
        match self {
            Pass::Spectre => "SPECTRE",
            Pass::SelfInfluence => "self-influence",
        }
    }
}

/// The records of class `at` atop `ranking` that share a trigger's fingerprint, if their
/// clique passes the `pass`'s test.
fn clique_among(
    evidence: &[ClassEvidence<'_>],
    at: usize,
    names: &[&str],
    ranking: &ClassScores,
    pass: Pass,
) -> Option<OtherInputs> {
    let e = &evidence[at];
    let dim = e.geometry?.dim;
    let row = |c: usize, i: usize| vector_of(evidence, c, i, dim);
    let mut queries: Vec<usize> = (0..e.rows.len()).filter(|&i| is_live(row(at, i))).collect();
    queries.sort_by(|&a, &b| ranking.scores[b].total_cmp(&ranking.scores[a]).then(a.cmp(&b)));
    queries.truncate(QUERIES);
    // Deep k-NN's neighbours (the scan's reduced space) are already found: where fewer than
    // MIN_GROUP of these records have one of another label there, no group of other classes'
    // inputs is among them (tuning seeds: every class that passed had 3 or more; 2 in 3 classes
    // asked had fewer), and the raw-space search, the rule's cost, is skipped. Pairs (0.2.39)
    // keep this bar of 3: at 2 where a pair may pass, 420 tuning runs at 128 x 300 came out the
    // same.
    if let Some(knn) = detector(e, names, "deep_knn") {
        let other_looking = queries.iter().filter(|&&q| knn.scores[q] > 0.0).count();
        if other_looking < MIN_GROUP {
            return None;
        }
    }
    let found = other_inputs::search(evidence, at, &vec![false; e.rows.len()], &queries, false);
    let mut marked: Vec<Marked> = Vec::new();
    for (&q, found) in queries.iter().zip(&found) {
        let share = found.other_classes_than(e.class).1;
        if share < MIN_OUTSIDER_SHARE {
            continue;
        }
        // A marked record has outsiders of other classes (its share is over 0).
        let Some((source_at, leftover)) = leftover_from_source(evidence, at, q, found) else {
            continue;
        };
        marked.push(Marked {
            index: q,
            share,
            source_at,
            leftover: unit(leftover),
        });
    }
    let clique = clique_of(&marked);
    log::debug!(
        "fingerprint ({pass:?}), class {}: {} of {} records that look like other classes' inputs share one, from {} sources",
        e.class,
        clique.members.len(),
        marked.len(),
        clique.sources
    );
    let Clique { members, sources, .. } = &clique;
    if pass == Pass::SelfInfluence && e.rows.len() >= SECOND_PASS_MIN_ROWS {
        let passed = if second_pass_clique_passes(members.len(), marked.len(), *sources, evidence.len() - 1) {
            clique
        } else {
            clique_against_other_classes(evidence, at, &marked)?
        };
        return Some(grown_group(evidence, at, names, passed, pass));
    }
    let passes = match pass {
        Pass::Spectre => clique_passes(members, marked.len(), *sources, e.rows.len()),
        Pass::SelfInfluence => small_class_clique_passes(members.len(), marked.len(), *sources, || {
            clique_standout(evidence, at, &marked, &clique)
        }),
    };
    passes.then(|| grown_group(evidence, at, names, clique, pass))
}

/// A clique of marked records: their leftovers share a direction.
struct Clique {
    /// Its records' indices into the marked records.
    of_marked: Vec<usize>,
    /// Its records (class-local index, outsiders' other-label share).
    members: Vec<(usize, f64)>,
    /// How many source classes they come from.
    sources: usize,
}

/// The largest clique of `marked` records (greedily) whose leftovers are [`MIN_COSINE`] apart
/// or closer.
fn clique_of(marked: &[Marked]) -> Clique {
    let adjacent = |a: usize, b: usize| dot(&marked[a].leftover, &marked[b].leftover) >= MIN_COSINE;
    let of_marked = greedy_clique(marked.len(), adjacent);
    let mut sources: Vec<usize> = of_marked.iter().map(|&m| marked[m].source_at).collect();
    sources.sort_unstable();
    sources.dedup();
    let members = of_marked.iter().map(|&m| (marked[m].index, marked[m].share)).collect();
    Clique {
        of_marked,
        members,
        sources: sources.len(),
    }
}

/// The group of class `at`'s passed `clique`, with the records that share its fingerprint
/// ([`sharing_the_fingerprint`]).
fn grown_group(evidence: &[ClassEvidence<'_>], at: usize, names: &[&str], clique: Clique, pass: Pass) -> OtherInputs {
    let member_indices: Vec<usize> = clique.members.iter().map(|m| m.0).collect();
    let grown = sharing_the_fingerprint(evidence, at, &member_indices);
    log::debug!(
        "fingerprint ({pass:?}), class {}: {} more records share it",
        evidence[at].class,
        grown.len()
    );
    OtherInputs::from_fingerprint(&evidence[at], names, clique.members, clique.sources, grown)
}

/// The second pass's clique in a class of [`SECOND_PASS_MIN_ROWS`] or more, asked again where
/// [`second_pass_clique_passes`] failed: the `marked` records' leftovers taken against their
/// nearest records of OTHER classes (the class set aside, as [`sharing_the_fingerprint`] does),
/// with its members (and their outsiders' share) and source count if it passes
/// [`other_class_clique_passes`]. Why: a 1% backdoor drawn from 4 source classes fails the
/// second pass's 5 sources, and 4 alone lets boundary cases through. Poison often has records
/// of the target among its nearest (the network learned the trigger), so its leftover against
/// the nearest of any class is taken against fewer source records; against other classes'
/// records alone it is taken as [`sharing_the_fingerprint`] takes it. On the tuning sets (see
/// [`OTHER_CLASS_MIN_SOURCES`]) the same counts on the first search's cliques would have passed
/// 3 classes without poison more and one target fewer (before the standout was asked).
fn clique_against_other_classes(evidence: &[ClassEvidence<'_>], at: usize, marked: &[Marked]) -> Option<Clique> {
    let e = &evidence[at];
    let queries: Vec<usize> = marked.iter().map(|m| m.index).collect();
    let found = other_inputs::search(evidence, at, &vec![true; e.rows.len()], &queries, false);
    let again: Vec<Marked> = marked
        .iter()
        .zip(&found)
        .filter_map(|(m, found)| {
            let (source_at, leftover) = leftover_from_source(evidence, at, m.index, found)?;
            Some(Marked {
                source_at,
                leftover: unit(leftover),
                ..*m
            })
        })
        .collect();
    let clique = clique_of(&again);
    log::debug!(
        "fingerprint (against other classes), class {}: {} of {} marked records share one, from {} sources",
        e.class,
        clique.members.len(),
        marked.len(),
        clique.sources
    );
    let members = clique.members.len();
    let passes = other_class_clique_passes(members, marked.len(), clique.sources, evidence.len() - 1, || {
        clique_standout(evidence, at, &again, &clique)
    });
    passes.then_some(clique)
}

/// Whether [`clique_against_other_classes`]'s clique of `members` records from `sources`
/// source classes, of `marked`, makes the class attacked: [`OTHER_CLASS_MIN_CLIQUE`] records,
/// [`SECOND_PASS_MIN_SHARE_OF_MARKED`], [`OTHER_CLASS_MIN_SOURCES`] and one fewer than half the
/// `other_classes` (rounded up; [`second_pass_clique_passes`] asks half), and a fingerprint
/// that `standout` (asked only when the counts pass) shows rare in the class, as the small
/// classes' test asks ([`MIN_STANDOUT`]).
fn other_class_clique_passes(
    members: usize,
    marked: usize,
    sources: usize,
    other_classes: usize,
    standout: impl FnOnce() -> f64,
) -> bool {
    members >= OTHER_CLASS_MIN_CLIQUE
        && members as f64 >= SECOND_PASS_MIN_SHARE_OF_MARKED * marked as f64
        && sources >= OTHER_CLASS_MIN_SOURCES.max(other_classes.div_ceil(2).saturating_sub(1))
        && standout() >= MIN_STANDOUT
}

/// How far `clique` (of the `marked` records of class `at`) stands out from the rest of the
/// class along the mean of its leftovers: see [`standout_along`].
fn clique_standout(evidence: &[ClassEvidence<'_>], at: usize, marked: &[Marked], clique: &Clique) -> f64 {
    let e = &evidence[at];
    let dim = e.geometry.map_or(0, |g| g.dim);
    let fingerprint = mean_rows(clique.of_marked.iter().map(|&m| &marked[m].leftover[..]), dim);
    let class_rows = (0..e.rows.len()).map(|i| vector_of(evidence, at, i, dim));
    let member_indices: Vec<usize> = clique.members.iter().map(|m| m.0).collect();
    let standout = standout_along(&fingerprint, class_rows, &member_indices);
    log::debug!("fingerprint, class {}: it stands out by {standout:.1}", e.class);
    standout
}

/// The class's records beyond the clique's `members` (class-local indices) whose leftover points
/// the way the members' do, with that cosine: [`GROW_MIN_COSINE`] or more with their mean
/// direction, and a length along it of [`GROW_MIN_STRENGTH`] of theirs; none where more than a
/// quarter of the records asked would join ([`GROW_CANDIDATES`]). Why: the clique is at most the
/// [`QUERIES`] top records of one ranking that look like other classes' inputs, while a backdoor
/// of 30 spreads over ranks in the hundreds, and many of its records look like the target
/// class's own inputs by their nearest records (the network learned the trigger), so the
/// clique's tests cannot find them. Their leftover still holds the trigger. Here each record's
/// leftover is taken against its nearest records of other classes (its own class set aside:
/// the records among those 10 of the class most of them are), so that it is defined for a
/// record whose nearest are its own class's; the members' too, for one scale. Asked are the
/// [`GROW_CANDIDATES`] live records furthest along the members' mean from the class's centre:
/// the poison sits there (ranks under 60 in the tuning sets below). The search costs 4 times
/// the clique's, in classes a fingerprint judged only.
///
/// Measured on the tuning sets (prototyped in Python on 0.2.41's scans first): 3 000 per class,
/// 64 and 128 units, seeds 281-340 1%: of the 14 target classes a fingerprint judged, 9 had
/// left 19-24 of their 30 poisoned records out; 113 of those joined, with 6 clean records (the
/// prototype at cosine 0.75 over 0.8 on all the sets below: +31 poisoned, +19 clean; at 0.85:
/// -39 and -9). Clean sets, 5%, faint 5% and label flips at 3 000 (seeds 281-340 / 281-310 /
/// 281-300): no class judged by a fingerprint grew. 300-500 per class (64 x 500 and 128 x 300,
/// seeds 201-320 clean and 1%, 201-260 5%, 15%, faint 5% and label flips): 24 poisoned and 4
/// clean records more, none in a clean or label-flip set.
fn sharing_the_fingerprint(evidence: &[ClassEvidence<'_>], at: usize, members: &[usize]) -> Vec<(usize, f64)> {
    let Some(geometry) = evidence[at].geometry else {
        return Vec::new();
    };
    let dim = geometry.dim;
    let rows = geometry.x.len() / dim.max(1);
    let row = |i: usize| &geometry.x[i * dim..(i + 1) * dim];
    let away: Vec<f32> = mean_rows(members.iter().map(|&i| row(i)), dim)
        .iter()
        .zip(&geometry.basis.mean)
        .map(|(m, c)| m - *c as f32)
        .collect();
    let mut candidates: Vec<(usize, f32)> = (0..rows)
        .filter(|&i| !members.contains(&i) && is_live(row(i)))
        .map(|i| (i, dot(row(i), &away)))
        .collect();
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    candidates.truncate(GROW_CANDIDATES);
    let queries: Vec<usize> = members.iter().copied().chain(candidates.iter().map(|c| c.0)).collect();
    let found = other_inputs::search(evidence, at, &vec![true; rows], &queries, false);
    let leftovers: Vec<Vec<f32>> = queries
        .iter()
        .zip(&found)
        .map(|(&q, found)| leftover_from_source(evidence, at, q, found).map_or_else(|| vec![0.0; dim], |l| l.1))
        .collect();
    let (of_members, of_candidates) = leftovers.split_at(members.len());
    let member_directions: Vec<Vec<f32>> = of_members.iter().map(|l| unit(l.clone())).collect();
    let fingerprint = unit(mean_rows(member_directions.iter().map(Vec::as_slice), dim));
    let along = |l: &[f32]| dot(l, &fingerprint) as f64;
    let member_strengths: Vec<f64> = of_members.iter().map(|l| along(l)).collect();
    let least_strength = GROW_MIN_STRENGTH * median(&member_strengths);
    let sharing: Vec<(usize, f64)> = candidates
        .iter()
        .zip(of_candidates)
        .filter_map(|(&(q, _), l)| {
            let strength = along(l);
            let cosine = strength / (dot(l, l) as f64).sqrt();
            (cosine >= GROW_MIN_COSINE && strength >= least_strength).then_some((q, cosine))
        })
        .collect();
    if 4 * sharing.len() > candidates.len() {
        log::debug!(
            "fingerprint, class {}: {} of the {} asked share it, a direction the class has: none joins",
            evidence[at].class,
            sharing.len(),
            candidates.len()
        );
        return Vec::new();
    }
    sharing
}

/// Class `at`'s record `q` (class-local)'s source class (the evidence index of the class most of
/// its `found` outsiders of other classes are) and its [`leftover`] against those outsiders of
/// the source; `None` when it has no outsider of another class (or the class no vectors).
fn leftover_from_source(
    evidence: &[ClassEvidence<'_>],
    at: usize,
    q: usize,
    found: &Found,
) -> Option<(usize, Vec<f32>)> {
    let dim = evidence[at].geometry?.dim;
    let row = |c: usize, i: usize| vector_of(evidence, c, i, dim);
    let (other, _) = found.other_classes_than(evidence[at].class);
    if other.is_empty() {
        return None;
    }
    let source = most_common(&other);
    let near: Vec<_> = found.outsiders.iter().filter(|o| o.class == source).collect();
    let source_at = near[0].at;
    let near_mean = mean_rows(near.iter().map(|o| row(o.at, o.index)), dim);
    // Class centres: each class's basis holds its mean.
    let mean_of = |c: usize| evidence[c].geometry.map_or(&[][..], |g| &g.basis.mean[..]);
    let toward_own: Vec<f32> = mean_of(at)
        .iter()
        .zip(mean_of(source_at))
        .map(|(a, b)| (a - b).max(0.0) as f32)
        .collect();
    Some((source_at, leftover(row(at, q), &near_mean, &toward_own)))
}

/// Whether the second pass's clique of `members` records from `sources` source classes (of
/// `other_classes`), of `marked` records that look like other classes' inputs, makes the class
/// attacked: [`MAX_CLASS_CLIQUE`] records (the first pass's cap is this pass's floor),
/// [`SECOND_PASS_MIN_SHARE_OF_MARKED`], and [`SECOND_PASS_MIN_SOURCES`] source classes and at
/// least half the other classes (rounded up): all-to-one poison is drawn from across the
/// dataset, a clean class's boundary cases from its neighbours, which are many where classes
/// are (50 classes x 1 000 records: cliques of 5-8 from 5-6 sources in classes without poison).
fn second_pass_clique_passes(members: usize, marked: usize, sources: usize, other_classes: usize) -> bool {
    members as f64 >= MAX_CLASS_CLIQUE.max(SECOND_PASS_MIN_SHARE_OF_MARKED * marked as f64)
        && sources >= SECOND_PASS_MIN_SOURCES
        && 2 * sources >= other_classes
}

/// Whether the second pass's clique in a class under [`SECOND_PASS_MIN_ROWS`] records makes it
/// attacked: [`MIN_GROUP`] records, [`SMALL_CLASS_MIN_SHARE_OF_MARKED`],
/// [`SMALL_CLASS_MIN_SOURCES`] and a fingerprint that `standout` (see [`standout_along`]; a
/// pass over the class, asked only when the counts pass) shows rare in the class
/// ([`MIN_STANDOUT`]).
fn small_class_clique_passes(members: usize, marked: usize, sources: usize, standout: impl FnOnce() -> f64) -> bool {
    members >= MIN_GROUP
        && members as f64 >= SMALL_CLASS_MIN_SHARE_OF_MARKED * marked as f64
        && sources >= SMALL_CLASS_MIN_SOURCES
        && standout() >= MIN_STANDOUT
}

/// How far the `members` (class-local indices) stand out from the rest of the class's live
/// `rows` along `direction`: the members' median projection less the rest's, over the rest's
/// spread, the larger of its MAD sigma and its mean absolute deviation from the median (the MAD
/// is 0 where most of the rest project to one value, as a ReLU class does on units it leaves
/// off). 0 where no other live record is left to compare with.
fn standout_along<'r>(direction: &[f32], rows: impl Iterator<Item = &'r [f32]>, members: &[usize]) -> f64 {
    let mut member_projections = Vec::new();
    let mut rest_projections = Vec::new();
    for (i, r) in rows.enumerate() {
        let projection = dot(r, direction) as f64;
        if members.contains(&i) {
            member_projections.push(projection);
        } else if is_live(r) {
            rest_projections.push(projection);
        }
    }
    if rest_projections.is_empty() || member_projections.is_empty() {
        return 0.0;
    }
    let centre = median(&rest_projections);
    let mean_deviation =
        rest_projections.iter().map(|p| (p - centre).abs()).sum::<f64>() / rest_projections.len() as f64;
    let spread = mad_sigma(&rest_projections, centre)
        .max(mean_deviation)
        .max(f64::MIN_POSITIVE);
    (median(&member_projections) - centre) / spread
}

/// Whether a clique of `members` (class-local index, outsiders' other-label share) from `sources`
/// source classes, of `marked` records that look like other classes' inputs in a class of
/// `class_rows`, makes the class attacked.
fn clique_passes(members: &[(usize, f64)], marked: usize, sources: usize, class_rows: usize) -> bool {
    let sure_pair = members.len() == PAIR && members.iter().all(|m| m.1 >= PAIR_MIN_SHARE);
    let least = if sure_pair { PAIR } else { MIN_GROUP };
    members.len() as f64 >= clique_needed(least, marked, class_rows) && sources >= MIN_SOURCES
}

/// Fewest records the clique must hold, of `marked` records that look like other classes' inputs
/// in a class of `class_rows`: `least`, half the marked, and [`MIN_SHARE_OF_CLASS`] up to
/// [`MAX_CLASS_CLIQUE`].
fn clique_needed(least: usize, marked: usize, class_rows: usize) -> f64 {
    (least as f64)
        .max(MIN_SHARE_OF_MARKED * marked as f64)
        .max((MIN_SHARE_OF_CLASS * class_rows as f64).min(MAX_CLASS_CLIQUE))
}

/// A queried record that looks like another class's input.
struct Marked {
    /// Class-local index.
    index: usize,
    /// Other classes' share of its nearest records.
    share: f64,
    /// The evidence index of the class most of them are (its source).
    source_at: usize,
    /// See [`leftover`].
    leftover: Vec<f32>,
}

/// Record `i` (class-local) of the class at evidence index `c`, `dim` long; empty for a class
/// without vectors.
fn vector_of<'e>(evidence: &'e [ClassEvidence<'_>], c: usize, i: usize, dim: usize) -> &'e [f32] {
    evidence[c].geometry.map_or(&[][..], |g| &g.x[i * dim..(i + 1) * dim])
}

/// Mean of `rows` (each `dim` long); zeros for none.
fn mean_rows<'r>(rows: impl Iterator<Item = &'r [f32]>, dim: usize) -> Vec<f32> {
    let mut sum = vec![0f64; dim];
    let mut count = 0usize;
    for r in rows {
        sum.iter_mut().zip(r).for_each(|(s, &v)| *s += v as f64);
        count += 1;
    }
    sum.iter().map(|s| (s / count.max(1) as f64) as f32).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// What `x` has that `near` (its source class's nearest records, averaged) does not, without
/// the component along `toward_own` (its class's centre seen from the source's); see
/// [`unit()`] for its direction.
fn leftover(x: &[f32], near: &[f32], toward_own: &[f32]) -> Vec<f32> {
    let mut r: Vec<f32> = x.iter().zip(near).map(|(a, b)| (a - b).max(0.0)).collect();
    let norm = dot(toward_own, toward_own).sqrt();
    if norm > 0.0 {
        let along = dot(&r, toward_own) / (norm * norm);
        r.iter_mut().zip(toward_own).for_each(|(v, t)| *v -= along * t);
    }
    r
}

/// `v` at unit length (zeros stay zeros).
fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let length = dot(&v, &v).sqrt();
    if length > 0.0 {
        v.iter_mut().for_each(|x| *x /= length);
    }
    v
}

/// A large clique of the graph on `n` vertices, greedily: from each vertex by falling degree,
/// add the vertices adjacent to all so far, by falling degree. Exact search is exponential, and
/// the graphs here hold at most [`QUERIES`] vertices with a few edges each.
fn greedy_clique(n: usize, adjacent: impl Fn(usize, usize) -> bool) -> Vec<usize> {
    let degree: Vec<usize> = (0..n)
        .map(|a| (0..n).filter(|&b| b != a && adjacent(a, b)).count())
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| degree[b].cmp(&degree[a]).then(a.cmp(&b)));
    let mut best: Vec<usize> = Vec::new();
    for &v in &order {
        if degree[v] < best.len() {
            break;
        }
        let mut clique = vec![v];
        for &u in &order {
            if u != v && clique.iter().all(|&w| adjacent(u, w)) {
                clique.push(u);
            }
        }
        if clique.len() > best.len() {
            best = clique;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::BasisFit;
    use crate::score::ClassGeometry;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    const DIM: usize = 32;
    const PER_CLASS: usize = 60;
    const TRIGGER: usize = DIM - 1;

    /// Sparse, non-negative inputs: class `c` switches on features `2c` and `2c + 1` (about 10).
    fn input_of(c: usize, rng: &mut rand_xoshiro::Xoshiro256PlusPlus) -> [f32; DIM] {
        let mut row = [0.0; DIM];
        for f in [2 * c, 2 * c + 1] {
            let noise: f64 = StandardNormal.sample(rng);
            row[f] = (10.0 + noise as f32).max(0.0);
        }
        row
    }

    /// Four classes; class 0's first records are `odd` (row values), topping its SPECTRE scores.
    fn four_classes(odd: &[[f32; DIM]]) -> Vec<ClassEvidence<'static>> {
        classes(&[PER_CLASS; 4], odd, &[true])
    }

    /// Classes of `sizes` records; class 0's first records are `odd` (row values). Each class has
    /// one detector per entry of `odd_on_top`: where true, the odd records top its scores, else
    /// they come last.
    fn classes(sizes: &[usize], odd: &[[f32; DIM]], odd_on_top: &[bool]) -> Vec<ClassEvidence<'static>> {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(9);
        let mut first_row = 0;
        sizes
            .iter()
            .enumerate()
            .map(|(c, &size)| {
                let mut rows: Vec<[f32; DIM]> = (0..size).map(|_| input_of(c, &mut rng)).collect();
                if c == 0 {
                    rows[..odd.len()].copy_from_slice(odd);
                }
                let x: &'static [f32] = Box::leak(rows.as_flattened().to_vec().into_boxed_slice());
                let basis: &'static BasisFit = Box::leak(Box::new(BasisFit::fit(x, DIM, 2)));
                let global: &'static [u32] = Box::leak((first_row..first_row + size as u32).collect());
                first_row += size as u32;
                let scores = odd_on_top
                    .iter()
                    .map(|&on_top| {
                        let odd_score = |i: usize| if on_top { 100.0 - i as f32 } else { 0.0 };
                        ClassScores::scores_only(
                            (0..size)
                                .map(|i| if c == 0 && i < odd.len() { odd_score(i) } else { 1.0 })
                                .collect(),
                        )
                    })
                    .collect();
                ClassEvidence {
                    class: c,
                    rows: global,
                    scores,
                    geometry: Some(ClassGeometry { basis, x, dim: DIM }),
                }
            })
            .collect()
    }

    /// Inputs of `sources` labelled class 0, each with `extra` switched on at 6.
    fn relabelled(sources: &[usize], extra: impl Fn(usize) -> usize) -> Vec<[f32; DIM]> {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        sources
            .iter()
            .enumerate()
            .map(|(k, &s)| {
                let mut row = input_of(s, &mut rng);
                row[extra(k)] += 6.0;
                row
            })
            .collect()
    }

    /// `count` inputs of class 0 with the trigger's feature at 6.
    fn own_with_trigger(count: usize, seed: u64) -> Vec<[f32; DIM]> {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
        (0..count)
            .map(|_| {
                let mut row = input_of(0, &mut rng);
                row[TRIGGER] = 6.0;
                row
            })
            .collect()
    }

    fn group_of(odd: &[[f32; DIM]]) -> Option<OtherInputs> {
        trigger_group(&four_classes(odd), 0, &["spectre"]).map(|(group, _)| group)
    }

    #[test]
    fn other_classes_inputs_sharing_a_trigger_are_the_group() {
        let poison = relabelled(&[1, 2, 3, 1], |_| TRIGGER);
        let group = group_of(&poison).expect("a group");
        let mut members: Vec<usize> = group.members.iter().map(|m| m.0).collect();
        members.sort_unstable();
        assert_eq!(members, vec![0, 1, 2, 3]);
        assert_eq!((group.grouped, group.sources), (4, 3));
        // The two from class 1 are each other's nearest: 9 of their 10 nearest are class 1's.
        assert!(group.members.iter().all(|m| m.1 >= 0.9), "{:?}", group.members);
        // Two such records from two classes, in a class of 60: a pair.
        let pair = group_of(&relabelled(&[1, 2], |_| TRIGGER)).expect("a pair");
        assert_eq!((pair.members.len(), pair.sources), (2, 2));
    }

    #[test]
    fn other_classes_inputs_without_a_shared_feature_or_from_one_class_are_no_group() {
        // Boundary cases: each has something of its own the source's records lack (features
        // 0, 1 and 8, none shared), so their leftovers do not point the same way.
        let scattered = relabelled(&[1, 2, 3], |k| [0, 1, 8][k]);
        assert!(group_of(&scattered).is_none());
        // A shared feature, but all from class 1: a natural overlap or labels flipped from one class.
        let one_source = relabelled(&[1, 1, 1, 1], |_| TRIGGER);
        assert!(group_of(&one_source).is_none());
        // The trigger on the class's own inputs: they look like the class's, none is marked.
        assert!(group_of(&own_with_trigger(4, 4)).is_none());
    }

    #[test]
    fn records_sharing_a_passed_cliques_fingerprint_join_it() {
        // Class 0 of 300 records: four inputs of three other classes with the trigger (the
        // clique), six of its own inputs with the trigger (they look like the class's own inputs,
        // so no clique test could take them), and three boundary cases without it.
        let poison = relabelled(&[1, 2, 3, 1], |_| TRIGGER);
        // Boundary cases of three other classes, each with a feature of its own: far along the
        // members' mean from the class's centre (their source classes' features), so asked.
        let other_feature = relabelled(&[1, 2, 3], |k| [8, 9, 10][k]);
        let mut sizes = [PER_CLASS; 4];
        sizes[0] = 300;
        let found_in = |odd: &[[f32; DIM]]| {
            trigger_group(&classes(&sizes, odd, &[true]), 0, &["spectre"])
                .expect("a group")
                .0
        };
        let group = found_in(&[&poison[..], &own_with_trigger(6, 6)[..], &other_feature[..]].concat());
        let mut members: Vec<usize> = group.members.iter().map(|m| m.0).collect();
        members.sort_unstable();
        assert_eq!(members, vec![0, 1, 2, 3]);
        let mut sharing: Vec<usize> = group.sharing.iter().map(|s| s.0).collect();
        sharing.sort_unstable();
        assert_eq!(sharing, (4..10).collect::<Vec<_>>(), "{:?}", group.sharing);
        assert!(group.sharing.iter().all(|s| s.1 >= GROW_MIN_COSINE));
        // Without such records, none joins.
        assert!(found_in(&[&poison[..], &other_feature[..]].concat()).sharing.is_empty());
        // Nor where more than a quarter of the records asked share it: the class's own direction.
        let group = found_in(&[&poison[..], &own_with_trigger(60, 6)[..]].concat());
        assert_eq!(group.members.len(), 4);
        assert!(group.sharing.is_empty(), "{} joined", group.sharing.len());
        // 45 of them: under a quarter of the 192 asked, they join (but a noisy one or two).
        let group = found_in(&[&poison[..], &own_with_trigger(45, 6)[..]].concat());
        let joined = group.sharing.len();
        assert!((40..=GROW_CANDIDATES / 4).contains(&joined), "{joined}");
    }

    #[test]
    fn a_clique_needs_three_half_the_marked_and_half_a_percent_of_the_class_up_to_five() {
        // Classes of 300-500: three records, or half of those marked.
        assert_eq!(clique_needed(MIN_GROUP, 4, 300), 3.0);
        assert_eq!(clique_needed(MIN_GROUP, 10, 500), 5.0);
        // A 1% backdoor of 30 in a class of 3 000 (tuning seed 300, 64 units): 14 of its 15
        // marked records shared a fingerprint, short of the 15 that 0.5% of the class asked.
        assert!(14.0 >= clique_needed(MIN_GROUP, 15, 3000));
        // Clean classes of 3 000 held cliques of 3 (tuning seeds); 5 records are needed there,
        // as in classes of 1 000, and no more in larger ones.
        assert_eq!(clique_needed(MIN_GROUP, 2, 3000), 5.0);
        assert_eq!(clique_needed(MIN_GROUP, 2, 1000), 5.0);
        assert_eq!(clique_needed(MIN_GROUP, 2, 800), 4.0);
        assert_eq!(clique_needed(MIN_GROUP, 2, 9000), 5.0);
    }

    #[test]
    fn a_pair_passes_only_in_small_classes_when_both_look_clearly_like_other_classes_inputs() {
        let sure = [(0, 0.9), (1, 1.0)];
        assert!(clique_passes(&sure, 3, 2, 300));
        assert!(clique_passes(&sure, 4, 2, 300));
        assert!(!clique_passes(&sure, 5, 2, 300), "half the marked");
        assert!(!clique_passes(&sure, 2, 1, 300), "one source");
        assert!(!clique_passes(&sure, 2, 2, 500), "0.5% of 500 is 2.5 records");
        assert!(!clique_passes(&[(0, 0.9), (1, 0.7)], 2, 2, 300));
        // Three records need no such share.
        assert!(clique_passes(&[(0, 0.5), (1, 0.5), (2, 0.6)], 3, 2, 500));
    }

    #[test]
    fn self_influence_is_asked_in_large_classes_where_spectre_top_holds_no_clique() {
        // Six inputs of five other classes with the trigger, labelled class 0 (1 000 records):
        // last in its SPECTRE ranking, first in its self-influence ranking.
        let names = ["spectre", "self_influence"];
        let poison = relabelled(&[1, 2, 3, 4, 5, 1], |_| TRIGGER);
        // `count` classes, class 0 of `rows` records; `odd_on_top` per detector of `names`.
        let found_in = |count: usize, rows: usize, odd: &[[f32; DIM]], odd_on_top: &[bool]| {
            let mut sizes = vec![PER_CLASS; count];
            sizes[0] = rows;
            trigger_group(&classes(&sizes, odd, odd_on_top), 0, &names[..odd_on_top.len()])
        };
        let second_only = [false, true];
        let (group, pass) = found_in(7, SECOND_PASS_MIN_ROWS, &poison, &second_only).expect("a group");
        assert_eq!(pass, Pass::SelfInfluence);
        let mut members: Vec<usize> = group.members.iter().map(|m| m.0).collect();
        members.sort_unstable();
        assert_eq!((members, group.sources), ((0..6).collect(), 5));
        // Not without self-influence, nor from fewer source classes.
        assert!(found_in(7, SECOND_PASS_MIN_ROWS, &poison, &[false]).is_none());
        // Where SPECTRE's top holds the clique, the first pass's finding stands.
        let first = found_in(7, SECOND_PASS_MIN_ROWS, &poison, &[true, true]).expect("a group");
        assert_eq!((first.0.members.len(), first.1), (6, Pass::Spectre));
        // Five records from four sources fail; six pass, asked again against other classes'
        // records (clique_against_other_classes).
        let four_sources = relabelled(&[1, 2, 3, 4, 1], |_| TRIGGER);
        assert!(found_in(7, SECOND_PASS_MIN_ROWS, &four_sources, &second_only).is_none());
        let six_from_four = relabelled(&[1, 2, 3, 4, 1, 2], |_| TRIGGER);
        let (group, pass) = found_in(7, SECOND_PASS_MIN_ROWS, &six_from_four, &second_only).expect("a group");
        assert_eq!((group.members.len(), group.sources, pass), (6, 4, Pass::SelfInfluence));
        // Not where much of the class has the trigger's feature too: it does not stand out.
        let with_own = [&six_from_four[..], &own_with_trigger(600, 5)[..]].concat();
        assert!(found_in(7, SECOND_PASS_MIN_ROWS, &with_own, &second_only).is_none());
        let three_sources = relabelled(&[1, 2, 3, 1, 2, 3, 1], |_| TRIGGER);
        assert!(found_in(7, SECOND_PASS_MIN_ROWS, &three_sources, &second_only).is_none());
        // One record fewer in the class and the smaller classes' test applies, which it passes.
        assert!(found_in(7, SECOND_PASS_MIN_ROWS - 1, &four_sources, &second_only).is_some());
        // With more classes, half the others: 6 sources of 12 pass, and against other classes
        // one fewer, 5, but not 4; with 14 classes the pass is not asked (7 sources of 13 would
        // pass its test).
        let six_sources = relabelled(&[1, 2, 3, 4, 5, 6], |_| TRIGGER);
        let most = SECOND_PASS_MAX_CLASSES;
        assert!(found_in(most, SECOND_PASS_MIN_ROWS, &six_sources, &second_only).is_some());
        assert!(found_in(most, SECOND_PASS_MIN_ROWS, &poison, &second_only).is_some());
        assert!(found_in(most, SECOND_PASS_MIN_ROWS, &six_from_four, &second_only).is_none());
        let seven_sources = relabelled(&[1, 2, 3, 4, 5, 6, 7], |_| TRIGGER);
        assert!(found_in(most + 1, SECOND_PASS_MIN_ROWS, &seven_sources, &second_only).is_none());
        let others_of_fourteen = SECOND_PASS_MAX_CLASSES;
        assert!(second_pass_clique_passes(7, 7, 7, others_of_fourteen));
        // The test itself: five records from five sources.
        assert!(second_pass_clique_passes(5, 25, 5, 9) && second_pass_clique_passes(5, 6, 5, 10));
        assert!(!second_pass_clique_passes(4, 6, 5, 9), "5 records");
        assert!(!second_pass_clique_passes(9, 20, 4, 9), "5 sources");
        assert!(!second_pass_clique_passes(5, 41, 5, 9), "a fifth of the marked");
        assert!(!second_pass_clique_passes(8, 20, 5, 49), "half of 50 classes' others");
        // Against other classes: six records from four sources, a fifth of the marked, standing
        // out by 3.5.
        assert!(other_class_clique_passes(6, 30, 4, 9, || 3.5));
        assert!(!other_class_clique_passes(5, 6, 9, 9, || 9.0), "6 records");
        assert!(!other_class_clique_passes(9, 20, 3, 9, || 9.0), "4 sources");
        assert!(
            !other_class_clique_passes(9, 20, 4, 12, || 9.0),
            "one fewer than half of 12"
        );
        assert!(!other_class_clique_passes(6, 31, 4, 9, || 9.0), "a fifth of the marked");
        assert!(!other_class_clique_passes(6, 30, 4, 9, || 3.4), "standing out");
    }

    #[test]
    fn in_smaller_classes_the_second_pass_asks_for_a_fingerprint_the_class_lacks() {
        // Class 0 of 300 records (of 7 classes); four inputs of three other classes with the
        // trigger, last in its SPECTRE ranking and first in its self-influence ranking.
        let names = ["spectre", "self_influence"];
        let found_in = |odd: &[[f32; DIM]]| {
            let mut sizes = vec![PER_CLASS; 7];
            sizes[0] = 300;
            trigger_group(&classes(&sizes, odd, &[false, true]), 0, &names)
        };
        let poison = relabelled(&[1, 2, 3, 1], |_| TRIGGER);
        let (group, pass) = found_in(&poison).expect("a group");
        let mut members: Vec<usize> = group.members.iter().map(|m| m.0).collect();
        members.sort_unstable();
        assert_eq!(
            (members, group.sources, pass),
            ((0..4).collect(), 3, Pass::SelfInfluence)
        );
        assert!(found_in(&relabelled(&[1, 2, 1, 2], |_| TRIGGER)).is_none(), "3 sources");
        // The same records where most of the class has the trigger's feature too (class 0's own
        // inputs with it, the next 44 of the 48 asked): their fingerprint does not stand out.
        assert!(found_in(&[&poison[..], &own_with_trigger(200, 5)[..]].concat()).is_none());
        // The test: 3 records, a quarter of the marked, 3 sources, standing out by 3.5.
        assert!(small_class_clique_passes(3, 12, 3, || 3.5));
        assert!(!small_class_clique_passes(2, 4, 3, || 9.0), "3 records");
        assert!(!small_class_clique_passes(3, 13, 3, || 9.0), "a quarter of the marked");
        assert!(!small_class_clique_passes(3, 4, 2, || 9.0), "3 sources");
        assert!(!small_class_clique_passes(3, 4, 3, || 3.4), "standing out");
        let asked = std::cell::Cell::new(false);
        small_class_clique_passes(2, 4, 3, || {
            asked.set(true);
            9.0
        });
        assert!(!asked.get(), "the standout is computed only where the counts pass");
    }

    #[test]
    fn standout_is_the_members_median_over_the_rests_spread() {
        let along_first =
            |rows: &[[f32; 2]], members: &[usize]| standout_along(&[1.0, 0.0], rows.iter().map(|r| &r[..]), members);
        // Members at 4 and 6; the rest at 0 but for two records at 1 (MAD 0, so the mean
        // absolute deviation, 2/5, is the spread); all-zero rows do not count.
        let sparse = [
            [4.0, 1.0],
            [0.0, 3.0],
            [1.0, 0.0],
            [0.0, 2.0],
            [6.0, 0.0],
            [1.0, 1.0],
            [0.0, 1.0],
            [0.0, 0.0],
        ];
        assert!((along_first(&sparse, &[0, 4]) - 5.0 / 0.4).abs() < 1e-9);
        // The rest at 0-4: the MAD sigma (1.4826) is the larger spread, above the mean absolute
        // deviation (6/5); members at 8 and 10.
        let spread = [
            [0.0, 1.0],
            [1.0, 1.0],
            [2.0, 1.0],
            [3.0, 1.0],
            [4.0, 1.0],
            [8.0, 1.0],
            [10.0, 1.0],
        ];
        assert!((along_first(&spread, &[5, 6]) - 7.0 / 1.4826).abs() < 1e-9);
        // Nothing to compare with: no standout.
        assert_eq!(along_first(&[[4.0, 1.0], [0.0, 0.0]], &[0]), 0.0);
    }

    #[test]
    fn leftover_keeps_what_the_source_lacks_but_the_way_to_the_own_class() {
        let r = leftover(&[3.0, 1.0, 4.0, 0.0], &[1.0, 2.0, 0.0, 0.0], &[0.0, 0.0, 2.0, 0.0]);
        // (2, 0, 4, 0) less its part along the third axis.
        assert_eq!(r, vec![2.0, 0.0, 0.0, 0.0]);
        assert_eq!(unit(r), vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(unit(leftover(&[1.0, 1.0], &[2.0, 2.0], &[1.0, 0.0])), vec![0.0, 0.0]);
    }

    #[test]
    fn greedy_clique_finds_the_largest_here() {
        // A triangle {0, 1, 2} and a square {3, 4, 5, 6} with both diagonals, 2 - 3 joined.
        let edges = [
            (0, 1),
            (1, 2),
            (0, 2),
            (2, 3),
            (3, 4),
            (4, 5),
            (5, 6),
            (3, 6),
            (3, 5),
            (4, 6),
        ];
        let adjacent = |a: usize, b: usize| edges.contains(&(a.min(b), a.max(b)));
        let mut clique = greedy_clique(7, adjacent);
        clique.sort_unstable();
        assert_eq!(clique, vec![3, 4, 5, 6]);
        assert!(greedy_clique(0, |_, _| true).is_empty());
    }
}
