//! The retrieval benchmark alone (`make bench` runs it too): Kefu's knowledge search over
//! the bilingual help center in `tests/retrieval/`, beside plain FTS5 baselines, with the
//! questions each method missed (`--missed`).

use kefu_runtime_tests::retrieval::{Corpus, Setup, corpus_dir, evaluate, kefu_rankings, table};

fn main() -> anyhow::Result<()> {
    let corpus = Corpus::load(&corpus_dir())?;
    let rows = evaluate(&corpus)?;
    println!("{}", table(&corpus, &rows));
    if std::env::args().any(|a| a == "--missed") {
        for r in &rows {
            println!("\n## missed by {} ({})\n", r.method, r.missed.len());
            for q in &r.missed {
                println!("- {q}");
            }
        }
    }
    if std::env::args().any(|a| a == "--explain") {
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
