//! The retrieval benchmark alone (`make bench` runs it too): Kefu's knowledge search over
//! the bilingual help center in `tests/retrieval/`, beside plain FTS5 baselines, with the
//! questions each method missed (`--missed`), why full text missed them (`--explain`), the
//! texts a real embedding model must embed for the fixture (`--embedding-inputs`, JSON) and
//! the search for the fusion's parameters on the dev half of the questions (`--tune`).

use kefu_engine::knowledge::Fusion;
use kefu_runtime_tests::retrieval::{
    Corpus, Half, Setup, corpus_dir, embedding_inputs, evaluate, kefu_rankings,
    kefu_rankings_fused, score, table,
};

fn main() -> anyhow::Result<()> {
    let corpus = Corpus::load(&corpus_dir())?;
    let arg = |name: &str| std::env::args().any(|a| a == name);
    if arg("--embedding-inputs") {
        println!("{}", serde_json::to_string(&embedding_inputs(&corpus)?)?);
        return Ok(());
    }
    if arg("--tune") {
        return tune(&corpus);
    }
    let rows = evaluate(&corpus)?;
    println!("{}", table(&corpus, &rows));
    if arg("--missed") {
        for r in &rows {
            println!("\n## missed by {} ({})\n", r.method, r.missed.len());
            for q in &r.missed {
                println!("- {q}");
            }
        }
    }
    if arg("--explain") {
        // Each question Kefu's full text misses: its terms, what came first, what answers.
        let all = corpus.questions_in(None);
        let ranked = kefu_rankings(&corpus, &all, Setup::WithSynonyms)?;
        for (q, pages) in all.iter().zip(&ranked) {
            if pages.iter().take(3).any(|p| q.answers.contains(p)) {
                continue;
            }
            let terms = kefu_engine::knowledge::query(&q.q, &corpus.synonyms);
            println!(
                "\n{}\n  own: {}\n  related: {}\n  got: {:?}\n  want: {:?}",
                q.q,
                terms.own.join(" "),
                terms.related.join(" "),
                pages.iter().take(5).collect::<Vec<_>>(),
                q.answers
            );
        }
    }
    Ok(())
}

/// Every rule of a grid on the dev half, for both embedders, against full text with
/// synonyms. The rule chosen ([`Fusion::DEFAULT`]) is the first of this list: among the
/// rules under which neither embedder's recall@3 nor MRR falls below full text's (the
/// weaker list cannot drag the search down), the best recall@3 with the real model, then
/// the best mean MRR. Only dev questions are searched here.
fn tune(corpus: &Corpus) -> anyhow::Result<()> {
    let dev = corpus.questions_of(Half::Dev);
    let base = score(&dev, &kefu_rankings(corpus, &dev, Setup::WithSynonyms)?);
    println!(
        "dev half: {} questions; full text + synonyms: recall@3 {:.3}, MRR {:.3}",
        dev.len(),
        base.recall_at_3,
        base.mrr
    );
    let mut grid = Vec::new();
    for vector_weight in [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0] {
        for vector_depth in [1, 3, 5, 10, 20, 40] {
            for vector_margin in [0.01, 0.02, 0.05, 0.1, 2.0] {
                grid.push(Fusion {
                    vector_weight,
                    vector_depth,
                    vector_margin,
                });
            }
        }
    }
    let spelling = kefu_rankings_fused(corpus, &dev, Setup::HybridSpelling, &grid)?;
    let model = kefu_rankings_fused(corpus, &dev, Setup::HybridModel, &grid)?;
    let mut results: Vec<(Fusion, [f64; 3], [f64; 2])> = grid
        .iter()
        .zip(spelling.iter().zip(&model))
        .map(|(f, (s, m))| {
            let (s, m) = (score(&dev, s), score(&dev, m));
            (
                *f,
                [
                    s.recall_at_3,
                    m.recall_at_3,
                    (s.recall_at_3 + m.recall_at_3) / 2.0,
                ],
                [s.mrr, m.mrr],
            )
        })
        .collect();
    let holds = |r: &[f64; 3], m: &[f64; 2]| {
        r[0] >= base.recall_at_3 && r[1] >= base.recall_at_3 && m[0] >= base.mrr && m[1] >= base.mrr
    };
    let key = |(_, r, m): &(Fusion, [f64; 3], [f64; 2])| (holds(r, m), r[1], m[0] + m[1]);
    results.sort_by(|a, b| {
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    println!(
        "| weight | depth | margin | recall@3 spelling | recall@3 e5 | MRR spelling | MRR e5 | no worse |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (f, r, m) in &results {
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
            f.vector_weight,
            f.vector_depth,
            f.vector_margin,
            r[0],
            r[1],
            m[0],
            m[1],
            if holds(r, m) { "yes" } else { "no" }
        );
    }
    let chosen = results.first().map(|(f, ..)| *f);
    println!(
        "\nchosen: {chosen:?}; the engine's default: {:?}{}",
        Fusion::DEFAULT,
        if chosen == Some(Fusion::DEFAULT) {
            ""
        } else {
            " (differs!)"
        }
    );
    Ok(())
}
