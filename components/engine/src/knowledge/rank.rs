//! Ranking: vector hits by similarity, and ranked lists (full-text views, vectors) fused by
//! reciprocal rank fusion.

use std::collections::BTreeMap;

use super::RRF_K;

/// The `limit` chunks nearest the question's embedding, `(chunk id, similarity)`, best
/// first. Stored vectors that do not decode or differ in length are skipped.
pub fn vector_ranking(
    question: &[f32],
    stored: impl IntoIterator<Item = (String, Vec<u8>)>,
    limit: usize,
) -> Vec<(String, f64)> {
    let mut scored: Vec<(String, f64)> = stored
        .into_iter()
        .filter_map(|(id, bytes)| {
            let v = crate::models::decode_vector(&bytes)?;
            (v.len() == question.len())
                .then(|| (id, f64::from(crate::models::similarity(question, &v))))
        })
        .collect();
    crate::sort::sort_by(&mut scored, |(a_id, a), (b_id, b)| {
        b.total_cmp(a).then_with(|| a_id.cmp(b_id))
    });
    scored.truncate(limit);
    scored
}

// ---------------------------------------------------------------------------------------
// Hybrid ranking
// ---------------------------------------------------------------------------------------

/// How the chunks nearest the question's embedding join the full-text views.
///
/// The full-text views are three lists of the same question's words; the vectors are one
/// more list, from a model of unknown quality: a model that knows little (or a question it
/// cannot place) still ranks every chunk, and with the weight of a full-text view its noise
/// pushes lexical answers out of the first places. So only the nearest few, and only those
/// nearly as near as the nearest, take part, at a weight below a full-text view's: the
/// vectors reorder what full text found and add what it missed, but a chunk they alone
/// find must be their clear first choice to reach the top. The values were chosen on one
/// half of the retrieval benchmark's questions (`tests/retrieval`, `--tune`) and are
/// reported on the other half (docs/benchmarks.md).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fusion {
    /// The vector list's weight in reciprocal rank fusion; each full-text view weighs 1.
    pub vector_weight: f64,
    /// How many of the nearest chunks take part.
    pub vector_depth: usize,
    /// Only chunks whose similarity is at least the nearest one's minus this take part.
    pub vector_margin: f64,
}

impl Fusion {
    /// The rule every host's search uses: weight 0.75, the nearest 40 at most, each within
    /// 0.05 of the nearest one's cosine similarity.
    pub const DEFAULT: Fusion = Fusion {
        vector_weight: 0.75,
        vector_depth: 40,
        vector_margin: 0.05,
    };

    /// The vectors as one more list, the weight of a full-text view, all of the nearest
    /// 40 (a margin of 2 admits any cosine): the rule before [`Fusion::DEFAULT`], kept for
    /// the benchmark's comparison.
    pub const EQUAL: Fusion = Fusion {
        vector_weight: 1.0,
        vector_depth: 40,
        vector_margin: 2.0,
    };

    /// The vector hits that take part, of `nearest` (`(chunk id, similarity)`, best first,
    /// as [`vector_ranking`] returns them): at most [`Fusion::vector_depth`], each within
    /// [`Fusion::vector_margin`] of the first.
    pub fn voters<'a>(&self, nearest: &'a [(String, f64)]) -> &'a [(String, f64)] {
        let Some((_, best)) = nearest.first() else {
            return nearest;
        };
        let n = nearest
            .iter()
            .take(self.vector_depth)
            .take_while(|(_, s)| *s >= best - self.vector_margin)
            .count();
        &nearest[..n]
    }
}

/// Fuses a full-text ranking and a vector ranking by reciprocal rank fusion: a chunk scores
/// `Σ 1 / (RRF_K + rank)` over the rankings it appears in (ranks from 1). `fulltext` holds
/// `(chunk id, bm25)` as [`SEARCH_SQL`] reports it (lower is better), `vector` holds
/// `(chunk id, cosine similarity)` (higher is better); each is ranked by its score whatever
/// its order, a chunk listed twice counts once at its better rank, and a NaN ranks last.
/// The best `limit` come back, best first, equal scores by chunk id: the same hits give
/// the same answer in any order.
pub fn merge_results(
    fulltext: &[(String, f64)],
    vector: &[(String, f64)],
    limit: usize,
) -> Vec<(String, f64)> {
    fn ranked(hits: &[(String, f64)], higher_is_better: bool) -> Vec<&str> {
        let mut hits: Vec<(&str, f64)> = hits.iter().map(|(id, s)| (id.as_str(), *s)).collect();
        crate::sort::sort_by(&mut hits, |(a_id, a), (b_id, b)| {
            let by_score = match (a.is_nan(), b.is_nan()) {
                (true, true) => core::cmp::Ordering::Equal,
                (true, false) => core::cmp::Ordering::Greater,
                (false, true) => core::cmp::Ordering::Less,
                (false, false) if higher_is_better => b.total_cmp(a),
                (false, false) => a.total_cmp(b),
            };
            by_score.then_with(|| a_id.cmp(b_id))
        });
        let mut seen = std::collections::BTreeSet::new();
        hits.into_iter()
            .filter(|(id, _)| seen.insert(*id))
            .map(|(id, _)| id)
            .collect()
    }
    fuse_rankings(&[ranked(fulltext, false), ranked(vector, true)], limit)
}

/// Ranked lists of chunk ids (best first) fused by reciprocal rank fusion: a chunk scores
/// `Σ 1 / (RRF_K + rank)` over the lists it appears in (ranks from 1; a chunk listed twice
/// in one list counts at its first place). The best `limit` come back with their fused
/// scores, best first, equal scores by chunk id.
pub fn fuse_rankings<S: AsRef<str>>(lists: &[Vec<S>], limit: usize) -> Vec<(String, f64)> {
    let weighted: Vec<(f64, &[S])> = lists.iter().map(|l| (1.0, l.as_slice())).collect();
    fuse_weighted(&weighted, limit)
}

/// [`fuse_rankings`] with a weight per list: a chunk scores `Σ w / (RRF_K + rank)` over the
/// lists `(w, list)` it appears in (weighted reciprocal rank fusion, as Elasticsearch's
/// and Azure AI Search's hybrid queries weigh their retrievers). A list of weight 0 adds
/// nothing.
pub fn fuse_weighted<S: AsRef<str>>(lists: &[(f64, &[S])], limit: usize) -> Vec<(String, f64)> {
    let mut fused: BTreeMap<&str, f64> = BTreeMap::new();
    for (weight, list) in lists {
        // A weight of 0 (or NaN, which compares false) adds nothing, not even a chunk.
        if weight.partial_cmp(&0.0) != Some(core::cmp::Ordering::Greater) {
            continue;
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, id) in list
            .iter()
            .map(AsRef::as_ref)
            .filter(|id| seen.insert(*id))
            .enumerate()
        {
            *fused.entry(id).or_insert(0.0) += weight / (RRF_K + (i + 1) as f64);
        }
    }
    let mut out: Vec<(String, f64)> = fused
        .into_iter()
        .map(|(id, s)| (id.to_owned(), s))
        .collect();
    crate::sort::sort_by(&mut out, |(a_id, a), (b_id, b)| {
        b.total_cmp(a).then_with(|| a_id.cmp(b_id))
    });
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(fused: &[(String, f64)]) -> Vec<&str> {
        fused.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn each_list_weighs_what_it_is_given() {
        let lexical = ["a", "b"];
        let vector = ["b", "c"];
        let r = |rank: f64| 1.0 / (RRF_K + rank);
        let fused = fuse_weighted(&[(1.0, &lexical[..]), (0.5, &vector[..])], 10);
        assert_eq!(ids(&fused), ["b", "a", "c"]);
        assert!((fused[0].1 - (r(2.0) + 0.5 * r(1.0))).abs() < 1e-12);
        assert!((fused[1].1 - r(1.0)).abs() < 1e-12);
        assert!((fused[2].1 - 0.5 * r(2.0)).abs() < 1e-12);
        // Weight 0 (or NaN) adds nothing, not even a chunk of its own.
        for w in [0.0, f64::NAN] {
            let fused = fuse_weighted(&[(1.0, &lexical[..]), (w, &vector[..])], 10);
            assert_eq!(ids(&fused), ["a", "b"]);
        }
        // Weights of 1 are plain reciprocal rank fusion.
        assert_eq!(
            fuse_weighted(&[(1.0, &lexical[..]), (1.0, &vector[..])], 10),
            fuse_rankings(&[lexical.to_vec(), vector.to_vec()], 10)
        );
    }

    #[test]
    fn only_the_nearest_few_near_the_first_vote() {
        let nearest: Vec<(String, f64)> = [0.90, 0.88, 0.86, 0.84, 0.80, 0.50]
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("c{i}"), *s))
            .collect();
        let rule = |vector_depth, vector_margin| Fusion {
            vector_weight: 1.0,
            vector_depth,
            vector_margin,
        };
        assert_eq!(rule(40, 0.05).voters(&nearest).len(), 3);
        assert_eq!(rule(2, 0.05).voters(&nearest).len(), 2);
        assert_eq!(rule(40, 2.0).voters(&nearest).len(), 6);
        assert_eq!(rule(40, 0.0).voters(&nearest).len(), 1);
        assert!(Fusion::DEFAULT.voters(&[]).is_empty());
        assert_eq!(Fusion::EQUAL.voters(&nearest).len(), 6);
    }

    /// What the default rule promises: the vectors reorder what full text found (all
    /// three views list each chunk here, so ranks within them matter little and the
    /// vectors' second choice comes first); what only the vectors find still comes back,
    /// but even their first choice after every chunk a view ranks in its first 20
    /// (`0.75 / (RRF_K + 1) < 1 / (RRF_K + 21)`); a chunk not near enough has no say.
    #[test]
    fn the_vectors_reorder_and_add_but_do_not_outvote_full_text() {
        let views = [
            vec!["agreed", "split", "other"],
            vec!["agreed", "other", "split"],
            vec!["agreed", "other", "split"],
        ];
        let nearest: Vec<(String, f64)> = vec![
            ("unseen".into(), 0.93),
            ("split".into(), 0.92),
            ("far".into(), 0.70),
        ];
        let voters: Vec<&str> = Fusion::DEFAULT
            .voters(&nearest)
            .iter()
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(
            voters,
            ["unseen", "split"],
            "far is not near enough to vote"
        );
        let w = Fusion::DEFAULT.vector_weight;
        let mut lists: Vec<(f64, &[&str])> = views.iter().map(|v| (1.0, v.as_slice())).collect();
        let without = fuse_weighted(&lists, 10);
        assert_eq!(ids(&without), ["agreed", "other", "split"]);
        lists.push((w, &voters));
        let with = fuse_weighted(&lists, 10);
        assert_eq!(ids(&with), ["split", "agreed", "other", "unseen"]);
        assert!(w / (RRF_K + 1.0) < 1.0 / (RRF_K + 21.0));
    }

    #[test]
    fn vectors_rank_by_similarity_and_fuse_with_full_text() {
        use crate::models::encode_vector;
        let q = [1.0_f32, 0.0];
        let stored = vec![
            ("far".to_owned(), encode_vector(&[0.0, 1.0])),
            ("near".to_owned(), encode_vector(&[0.8, 0.6])),
            ("same".to_owned(), encode_vector(&[1.0, 0.0])),
            ("broken".to_owned(), vec![1, 2, 3]),
            ("short".to_owned(), encode_vector(&[1.0])),
        ];
        let ranked = vector_ranking(&q, stored, 2);
        assert_eq!(
            ranked.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            ["same", "near"]
        );
        // "same" is found only by vectors, "lex" only by full text, "near" by both: it wins.
        let fulltext = vec!["near", "lex"];
        let vector: Vec<&str> = ranked.iter().map(|(id, _)| id.as_str()).collect();
        let out = fuse_rankings(&[fulltext, vector], 3);
        let ids: Vec<&str> = out.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids[0], "near");
        assert!(ids.contains(&"same") && ids.contains(&"lex"), "{ids:?}");
        assert!(out[0].1 > out[1].1);
    }
}
