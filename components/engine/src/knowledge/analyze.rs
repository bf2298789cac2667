//! How text becomes search terms, the same at index time and at query time.
//!
//! - **Words** of alphabetic scripts are lower-cased; the index table's tokenizer
//!   (`porter unicode61 remove_diacritics 2`) then stems them and folds accents on both
//!   sides, so "shipped", "shipping" and "ships" meet at "ship". SQLite's Porter stemmer
//!   costs the wasm nothing.
//! - **Chinese** (and other ideographs, which are written without spaces) is indexed as
//!   overlapping two-character windows plus each character alone: `退款政策` as
//!   `退款 款政 政策 退 款 政 策`. Windows find words (most Chinese words have two
//!   characters); single characters find the one-character words visitors write (`退`,
//!   `寄`, `换`) inside longer ones (`退货`, `邮寄`, `换货`).
//! - **Stop words**, in both languages, are left out of the index and of questions: words a
//!   question is made of that say nothing about what it asks ("how", "can", "my", `的`,
//!   `吗`).
//!
//! A question becomes a [`Query`]: its own terms, and the terms its words stand for (the
//! operator's synonyms and the built-in customer-service thesaurus, [`super::thesaurus`]),
//! which the search ranks separately (see [`super::sql::search_statements`]).

use super::thesaurus::{THESAURUS_EN, THESAURUS_ZH};
use super::{MAX_QUERY_TERMS, Synonym, is_han, truncate_chars};

/// English words that carry no meaning in a question or a page.
const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "after",
    "again",
    "all",
    "also",
    "am",
    "an",
    "and",
    "any",
    "anything",
    "are",
    "as",
    "at",
    "be",
    "been",
    "being",
    "but",
    "by",
    "can",
    "cannot",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "don",
    "done",
    "dont",
    "else",
    "even",
    "ever",
    "for",
    "from",
    "get",
    "gets",
    "getting",
    "got",
    "had",
    "has",
    "have",
    "having",
    "he",
    "hello",
    "her",
    "here",
    "hey",
    "hi",
    "him",
    "his",
    "how",
    "i",
    "id",
    "if",
    "im",
    "in",
    "into",
    "is",
    "it",
    "its",
    "ive",
    "just",
    "know",
    "let",
    "like",
    "ll",
    "me",
    "might",
    "mine",
    "more",
    "most",
    "much",
    "must",
    "my",
    "need",
    "no",
    "not",
    "now",
    "of",
    "off",
    "ok",
    "okay",
    "on",
    "one",
    "or",
    "our",
    "out",
    "please",
    "pls",
    "plz",
    "re",
    "really",
    "s",
    "she",
    "should",
    "so",
    "some",
    "someone",
    "something",
    "still",
    "such",
    "t",
    "tell",
    "than",
    "thank",
    "thanks",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "things",
    "this",
    "those",
    "to",
    "too",
    "u",
    "up",
    "us",
    "ve",
    "very",
    "want",
    "wanted",
    "was",
    "way",
    "we",
    "were",
    "what",
    "whats",
    "when",
    "where",
    "which",
    "while",
    "who",
    "why",
    "will",
    "with",
    "would",
    "yes",
    "yet",
    "you",
    "your",
    "yours",
];

/// Chinese characters that carry no meaning on their own: particles, pronouns, question
/// words. A two-character window holding one is noise too (`我的`, `的订`, `是否`).
const STOP_HAN: &[char] = &[
    '的', '了', '吗', '呢', '吧', '啊', '么', '我', '你', '您', '是', '怎', '什', '哪', '呀', '嗎',
    '麼', '他', '她', '它', '们', '這', '这', '那', '在', '和', '就', '也', '都', '要', '能', '可',
    '以', '嘛', '哦', '喔', '啦', '没', '不', '里',
];

/// A piece of text as the analyzer sees it: words and ideographs in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// A lower-cased word of an alphabetic script (or a number).
    Word(String),
    /// One ideograph; `joined` when it follows another ideograph directly.
    Han { c: char, joined: bool },
}

fn pieces(text: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut after_han = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if is_han(c) {
            if !word.is_empty() {
                out.push(Piece::Word(core::mem::take(&mut word)));
            }
            out.push(Piece::Han {
                c,
                joined: after_han,
            });
            after_han = true;
        } else {
            after_han = false;
            if c.is_alphanumeric() {
                word.extend(c.to_lowercase());
            } else if (c == '\'' || c == '’') && word.ends_with(char::is_alphabetic) {
                // "don't" is one word ("dont"); "where's" and "customer's" lose the "'s".
                let mut rest = chars.clone();
                let possessive = matches!(rest.next(), Some('s' | 'S'))
                    && !rest.next().is_some_and(char::is_alphanumeric);
                if possessive {
                    chars.next();
                }
            } else if !word.is_empty() {
                out.push(Piece::Word(core::mem::take(&mut word)));
            }
        }
    }
    if !word.is_empty() {
        out.push(Piece::Word(word));
    }
    out
}

fn stop_word(w: &str) -> bool {
    STOP_WORDS.binary_search(&w).is_ok()
}

fn stop_han(c: char) -> bool {
    STOP_HAN.contains(&c)
}

/// The terms a page's text is indexed under, space-separated (see the module
/// documentation).
pub(super) fn index_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    let mut push = |t: &str| {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(t);
    };
    let mut prev: Option<char> = None;
    for p in pieces(text) {
        match p {
            Piece::Word(w) => {
                prev = None;
                if !stop_word(&w) {
                    push(&w);
                }
            }
            Piece::Han { c, joined } => {
                if joined && let Some(p) = prev {
                    push(&format!("{p}{c}"));
                }
                if !stop_han(c) {
                    push(c.encode_utf8(&mut [0; 4]));
                }
                prev = Some(c);
            }
        }
    }
    out
}

/// The shortest word whose character trigrams are indexed and searched.
const MIN_GRAM_WORD: usize = 5;

/// The character trigrams of a word of an alphabetic script (`linen` → `lin ine nen`),
/// when it is long enough to be misspelled in a way trigrams still recognise.
fn word_grams(word: &str) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    if chars.len() < MIN_GRAM_WORD || !chars.iter().all(|c| c.is_alphabetic()) {
        return Vec::new();
    }
    chars.windows(3).map(|w| w.iter().collect()).collect()
}

/// The character trigrams a page's longer words are indexed under, space-separated: what
/// a misspelled word of a question ("linnen", "exhange") still shares with the page.
pub(super) fn grams_text(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for p in pieces(text) {
        if let Piece::Word(w) = p
            && !stop_word(&w)
        {
            out.extend(word_grams(&w));
        }
    }
    out.join(" ")
}

/// A light English stem, used only to match a question's words with synonyms and the
/// thesaurus ("parcels" with "parcel", "cancelled" with "cancel"); the index stems with
/// Porter's algorithm.
pub(super) fn key(word: &str) -> String {
    let w = word.trim_end_matches(['\'', '’']);
    let w = w.strip_suffix("'s").unwrap_or(w);
    let n = w.chars().count();
    if !w.is_ascii() || n <= 3 {
        return w.to_owned();
    }
    let undouble = |s: &str| -> String {
        let b = s.as_bytes();
        let last = b.len().checked_sub(1).map(|i| b[i]);
        let doubled = b.len() >= 3 && last == Some(b[b.len() - 2]);
        // "shipp(ing)", "cancell(ed)" undouble; "miss", "buzz", "fall" do not.
        if doubled && !matches!(last, Some(b's' | b'z')) && (last != Some(b'l') || b.len() > 4) {
            s[..s.len() - 1].to_owned()
        } else {
            s.to_owned()
        }
    };
    let stem = if let Some(s) = w.strip_suffix("ies").filter(|_| n > 4) {
        format!("{s}y")
    } else if let Some(s) = w.strip_suffix("sses") {
        format!("{s}ss")
    } else if let Some(s) = w
        .strip_suffix("es")
        .filter(|s| s.ends_with(['x', 'z']) || s.ends_with("ch") || s.ends_with("sh"))
    {
        s.to_owned()
    } else if let Some(s) = w
        .strip_suffix('s')
        .filter(|s| !s.ends_with(['s', 'u', 'i']) && n > 3)
    {
        s.to_owned()
    } else if let Some(s) = w.strip_suffix("ing").filter(|s| s.len() >= 3) {
        undouble(s)
    } else if let Some(s) = w.strip_suffix("ed").filter(|s| s.len() >= 3) {
        undouble(s)
    } else {
        w.to_owned()
    };
    // "arrive" and "arriv(ed)", "damage" and "damag(ed)" meet.
    match stem.strip_suffix('e') {
        Some(s) if s.len() >= 4 => s.to_owned(),
        _ => stem,
    }
}

/// A question made into search terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// The question's own terms, each an FTS5 string (quoted).
    pub own: Vec<String>,
    /// The terms its words stand for: synonyms, the thesaurus, and single characters of
    /// its Chinese words.
    pub related: Vec<String>,
    /// The character trigrams of its longer words.
    pub grams: Vec<String>,
}

impl Query {
    /// Nothing in the question is searchable.
    pub fn is_empty(&self) -> bool {
        self.own.is_empty() && self.related.is_empty()
    }

    /// Every term, the question's own first.
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.own.iter().chain(&self.related)
    }
}

/// An FTS5 string: the terms of `text` (already analyzed) in double quotes, quotes inside
/// doubled. Several terms make a phrase.
fn quoted(terms: &str) -> String {
    format!("\"{}\"", terms.replace('"', "\"\""))
}

/// What a phrase of a synonym or the thesaurus is searched as: its index terms, as one
/// FTS5 phrase (`american express`), or `None` when nothing in it is searchable.
fn phrase_term(phrase: &str) -> Option<String> {
    let mut words = Vec::new();
    let mut han = String::new();
    for p in pieces(phrase) {
        match p {
            Piece::Word(w) => words.push(w),
            Piece::Han { c, .. } => han.push(c),
        }
    }
    if !han.is_empty() {
        // A Chinese word: its windows as a phrase (`退货` → "退货", `退货政策` → the
        // phrase "退货 货政 政策"); one character alone.
        let chars: Vec<char> = han.chars().collect();
        let text = if chars.len() == 1 {
            han
        } else {
            chars
                .windows(2)
                .map(|w| w.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join(" ")
        };
        return Some(quoted(&text));
    }
    let words: Vec<String> = words.into_iter().filter(|w| !stop_word(w)).collect();
    (!words.is_empty()).then(|| quoted(&words.join(" ")))
}

/// Whether `needle` (keys of a phrase) occurs in `keys` as consecutive words.
fn contains_keys(keys: &[String], needle: &[String]) -> bool {
    !needle.is_empty() && keys.windows(needle.len()).any(|w| w == needle)
}

fn phrase_keys(phrase: &str) -> Vec<String> {
    pieces(phrase)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Word(w) => Some(key(&w)),
            Piece::Han { .. } => None,
        })
        .collect()
}

fn han_text(phrase: &str) -> String {
    phrase.chars().filter(|c| is_han(*c)).collect()
}

/// A phrase of a synonym entry or the thesaurus, read once: how the question may mention
/// it, and what it is searched as.
#[derive(Debug)]
struct Phrase {
    text: String,
    /// Its words as keys, in order.
    keys: Vec<String>,
    /// Its Chinese, run together.
    han: String,
    /// What it is searched as ([`phrase_term`]).
    term: Option<String>,
}

impl Phrase {
    fn new(text: &str) -> Self {
        Phrase {
            text: text.to_owned(),
            keys: phrase_keys(text),
            han: han_text(text),
            term: phrase_term(text),
        }
    }

    /// Whether the question mentions it (its words as keys, in order; its Chinese as a
    /// substring of one of the question's Chinese runs).
    fn mentioned(&self, question_keys: &[String], question_han: &[String]) -> bool {
        if !self.han.is_empty() {
            return question_han.iter().any(|run| run.contains(&self.han));
        }
        contains_keys(question_keys, &self.keys)
    }
}

/// The built-in thesaurus's groups, read once per isolate rather than on every search
/// (reading its phrases was most of a question's analysis: 125 µs natively).
fn thesaurus() -> &'static [Vec<Phrase>] {
    static GROUPS: std::sync::OnceLock<Vec<Vec<Phrase>>> = std::sync::OnceLock::new();
    GROUPS.get_or_init(|| {
        THESAURUS_EN
            .iter()
            .chain(THESAURUS_ZH)
            .map(|g| g.iter().map(|p| Phrase::new(p)).collect())
            .collect()
    })
}

/// The terms of a run of Chinese: its windows without a stop character as the question's
/// own, and its characters; a character no window keeps stands alone among the own terms
/// (`退` in `可以退吗`), the others go to `singles`.
fn han_run_terms(run: &str, own: &mut Vec<String>, singles: &mut Vec<String>) {
    let chars: Vec<char> = run.chars().collect();
    let window_ok =
        |i: usize| i + 1 < chars.len() && !stop_han(chars[i]) && !stop_han(chars[i + 1]);
    for (i, &c) in chars.iter().enumerate() {
        if window_ok(i) {
            push_term(own, quoted(&format!("{c}{}", chars[i + 1])), &[]);
        }
        if stop_han(c) {
            continue;
        }
        let in_a_window = window_ok(i) || (i > 0 && window_ok(i - 1));
        if !in_a_window {
            push_term(own, quoted(&c.to_string()), &[]);
        } else {
            singles.push(quoted(&c.to_string()));
        }
    }
}

fn push_term(list: &mut Vec<String>, t: String, other: &[String]) {
    if list.len() < MAX_QUERY_TERMS && !list.contains(&t) && !other.contains(&t) {
        list.push(t);
    }
}

/// The question `text` as search terms: at most [`MAX_QUERY_TERMS`] of its own, and at
/// most as many related ones.
///
/// Own terms: each word that is not a stop word (one-letter words only when they are
/// digits), each two-character window of its Chinese without a stop character, and each
/// Chinese character that stands alone. Related terms: the synonyms of every `synonyms`
/// entry whose term the question mentions, the other members of every thesaurus group it
/// mentions, and the single characters of its Chinese windows. Every term is a quoted
/// FTS5 string: nothing a visitor types can become query syntax.
pub fn query(text: &str, synonyms: &[Synonym]) -> Query {
    // Questions are short; a pasted novel is searched by its opening words.
    let cut = truncate_chars(text, 4000);
    let text = if cut.len() < text.len() {
        cut.rfind(char::is_whitespace).map_or(cut, |i| &cut[..i])
    } else {
        cut
    };
    let mut q = Query::default();
    let mut keys = Vec::new();
    let mut han_runs: Vec<String> = Vec::new();
    let mut singles: Vec<String> = Vec::new();
    let mut flushed = 0;
    let mut flush = |runs: &[String], own: &mut Vec<String>, singles: &mut Vec<String>| {
        for run in &runs[flushed..] {
            han_run_terms(run, own, singles);
        }
        flushed = runs.len();
    };
    for p in pieces(text) {
        match p {
            Piece::Word(w) => {
                flush(&han_runs, &mut q.own, &mut singles);
                keys.push(key(&w));
                let meaningful = !stop_word(&w)
                    && (w.chars().count() > 1 || w.chars().all(|c| c.is_ascii_digit()));
                if meaningful {
                    push_term(&mut q.own, quoted(&w), &[]);
                    // Adjacent trigrams as two-token phrases: a page matches on two
                    // letters-in-a-row overlaps, not on one shared trigram ("student" and
                    // "center" share "ent").
                    for pair in word_grams(&w).windows(2) {
                        let t = quoted(&pair.join(" "));
                        if q.grams.len() < 2 * MAX_QUERY_TERMS && !q.grams.contains(&t) {
                            q.grams.push(t);
                        }
                    }
                }
            }
            Piece::Han { c, joined } => {
                if joined && let Some(run) = han_runs.last_mut() {
                    run.push(c);
                } else {
                    flush(&han_runs, &mut q.own, &mut singles);
                    han_runs.push(c.to_string());
                }
            }
        }
    }
    flush(&han_runs, &mut q.own, &mut singles);
    let mut related: Vec<String> = Vec::new();
    let operator: Vec<Vec<Phrase>> = synonyms
        .iter()
        .map(|s| {
            core::iter::once(&s.term)
                .chain(&s.synonyms)
                .map(|p| Phrase::new(p))
                .collect()
        })
        .collect();
    for group in operator.iter().chain(thesaurus()) {
        let hit = group.iter().find(|p| p.mentioned(&keys, &han_runs));
        if let Some(hit) = hit {
            for t in group
                .iter()
                .filter(|p| p.text != hit.text)
                .filter_map(|p| p.term.clone())
            {
                push_term(&mut related, t, &q.own);
            }
        }
    }
    for s in singles {
        push_term(&mut related, s, &q.own);
    }
    q.related = related;
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        let mut sorted = STOP_WORDS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, STOP_WORDS);
    }

    #[test]
    fn pages_index_words_windows_and_characters() {
        assert_eq!(
            index_text("How do I get a refund? 申请退款需要三个工作日"),
            "refund 申 申请 请 请退 退 退款 款 款需 需 需要 要三 三 三个 个 个工 工 工作 作 作日 日"
        );
        assert_eq!(index_text("Customer's orders"), "customer orders");
        assert_eq!(index_text("Where's my parcel? I don't know"), "parcel");
    }

    #[test]
    fn keys_meet_across_inflections() {
        for (a, b) in [
            ("parcels", "parcel"),
            ("cancelled", "cancel"),
            ("shipping", "ship"),
            ("shipped", "ship"),
            ("deliveries", "delivery"),
            ("arrived", "arrive"),
            ("damaged", "damage"),
            ("boxes", "box"),
            ("address", "address"),
            ("Amex", "amex"),
        ] {
            assert_eq!(key(&a.to_lowercase()), key(b), "{a} / {b}");
        }
    }

    #[test]
    fn questions_keep_their_meaningful_words() {
        let q = query("How can I get my money back?", &[]);
        assert_eq!(q.own, ["\"money\"", "\"back\""]);
        assert!(q.related.contains(&"\"refund\"".to_owned()), "{q:?}");
        let q = query("寄到北京要几天？", &[]);
        assert_eq!(q.own, ["\"寄到\"", "\"到北\"", "\"北京\"", "\"几天\""]);
        assert!(q.related.contains(&"\"寄\"".to_owned()), "{q:?}");
        assert!(query("the and or 的了吗", &[]).is_empty());
    }

    #[test]
    fn operator_synonyms_add_terms() {
        let syn = |term: &str, s: &[&str]| Synonym {
            term: term.into(),
            synonyms: s.iter().map(|s| s.to_string()).collect(),
        };
        let synonyms = [
            syn("Amex", &["American Express"]),
            syn("退", &["退货"]),
            syn("gift voucher", &["gift card"]),
        ];
        let q = query("can I pay with amex?", &synonyms);
        assert!(
            q.related.contains(&"\"american express\"".to_owned()),
            "{q:?}"
        );
        let q = query("退", &synonyms);
        assert_eq!(q.own, ["\"退\""]);
        assert!(q.related.contains(&"\"退货\"".to_owned()), "{q:?}");
        // A phrase matches only as a phrase.
        let q = query("a gift for my voucher", &synonyms);
        assert!(!q.related.contains(&"\"gift card\"".to_owned()), "{q:?}");
        let q = query("lost my gift vouchers", &synonyms);
        assert!(q.related.contains(&"\"gift card\"".to_owned()), "{q:?}");
    }
}
