//! The unanswered log in groups: near-duplicate questions together, with how often each was
//! asked, so the operator answers "asked 14 times this week" once instead of reading the
//! same question fourteen times.
//!
//! # How questions are compared
//!
//! A question becomes the search's own tokens ([`crate::offline::tokens`]: lower-cased,
//! lightly stemmed words; Chinese as two-character windows), less the words that carry no
//! topic (`hi`, `please`, `know`) and the Chinese windows holding a particle (`的`, `吗`),
//! or "How do I …" questions about anything would meet on them. Each token weighs its
//! length in characters, so the long, specific words (`bitcoin`, `installments`) decide
//! more than the short, common ones (`pay`). Two questions are alike by the weight of the
//! tokens each has a match for in the other, over the weight of both
//! (`(matched in A + matched in B) / (all of A + all of B)`), at [`GROUP_SIMILARITY`] or
//! more. A Chinese window matches only itself; a word matches itself, a word it begins or
//! that begins it (`refund`, `refunded`; a three-letter word only before a usual ending:
//! `pay`, `payment`, never `car`, `cart`), and a misspelling of it: one letter added,
//! dropped, changed or two swapped (`shiping`, `refnud`), two in words of eight letters or
//! more. Questions in different scripts share no token, so an
//! English question and a Chinese one are never grouped: the operator answers each
//! language's wording, and each is then found in its language.
//!
//! # How groups form, and why the key is stable
//!
//! Entries are read oldest first (by row id). Each joins the most similar existing group,
//! compared with that group's first few distinct wordings (its *exemplars*: the oldest
//! entry, its *leader*, and up to two more), or starts a new group. An entry's group
//! depends only on the entries before it, so questions logged later never move earlier
//! ones, and a group's key — its leader's row id — stays the same while new questions join
//! it; the operator's answer names the group by that key.
//!
//! # Bounded work
//!
//! The log holds at most [`super::MAX_UNANSWERED_KEPT`] entries per tenant, and
//! [`group_unanswered`] reads no more. A question counts by its first 300 characters and at
//! most [`MAX_WORDS`] tokens; a repeated question joins its group through a map of texts,
//! with no comparison; which of the log's distinct words are one word is found once, among
//! words sharing their first or second letter, at most [`MAX_WORD_PAIRS`] pairs; a new
//! wording is compared only with the groups that share one of its character trigrams
//! (edges marked, so a misspelled word still shares some: `^re ref` of `refund` and
//! `refnud`), found through an index of the exemplars' trigrams whose lists stop growing
//! at [`MAX_POSTINGS`], and with at most [`MAX_CANDIDATES`] of them, best-sharing first.
//! A full log of a thousand distinct questions groups in about ten milliseconds.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::unanswered::LoggedQuestion;
use super::{collapse_ws, is_han, truncate_chars};
use crate::offline;
use crate::time::Timestamp;

/// The similarity (see the module documentation) at which two questions are the same
/// question asked again.
pub const GROUP_SIMILARITY: f64 = 0.5;

/// The most tokens of one question compared (its first ones).
pub const MAX_WORDS: usize = 32;

/// Endings that make a three-letter word another form of it (`pay`, `payment`); longer
/// words match any word they begin.
const SUFFIXES: &[&str] = &[
    "s", "es", "ed", "er", "ers", "ing", "ment", "ments", "al", "able", "ly", "tion", "ion",
];

/// Longer words match only themselves (the misspelling check is quadratic in length).
const MAX_FUZZY_CHARS: usize = 24;

/// The most pairs of distinct words a log's grouping compares for misspellings.
pub const MAX_WORD_PAIRS: usize = 200_000;

/// The most groups a new wording is compared with.
pub const MAX_CANDIDATES: usize = 8;

/// How long a trigram's list of groups may grow; a trigram that many groups share says
/// little about any of them.
pub const MAX_POSTINGS: usize = 32;

/// The distinct wordings of a group a new wording is compared with.
const MAX_EXEMPLARS: usize = 3;

/// The most distinct wordings a group shows (the representative first).
pub const MAX_EXAMPLES: usize = 8;

/// The most conversations a group names.
pub const MAX_CONVERSATIONS: usize = 5;

/// What "this week" means: the last seven days before `now`.
pub const WEEK_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Words a question is made of that say nothing about what it asks, beyond those
/// [`offline::tokens`] drops (compared after its stemming).
const FILLER_WORDS: &[&str] = &[
    "hi", "hello", "hey", "thank", "thanks", "thx", "pls", "plz", "help", "question", "need",
    "want", "know", "tell", "have", "has", "had", "did", "should", "may", "might", "just", "also",
    "than", "then", "they", "them", "been", "were", "get", "got", "ok", "okay", "im", "dont",
    "don", "anyone", "someone", "way", "possible", "there",
];

/// Chinese characters that make a two-character window noise (particles and pronouns).
const FILLER_CJK: &[char] = &[
    '的', '了', '吗', '呢', '吧', '啊', '么', '我', '你', '您', '是', '怎', '什', '哪', '呀', '嗎',
    '麼', '他', '她', '它', '们', '這', '这', '那', '请', '問', '问', '好',
];

/// A group of near-duplicate unanswered questions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuestionGroup {
    /// The group's key: its oldest entry's row id, stable while questions join it.
    pub key: String,
    /// The wording asked most often (the earliest among equals).
    pub question: String,
    /// How many times it was asked, in all.
    pub count: u32,
    /// How many times in the seven days before `now`.
    pub last_7_days: u32,
    /// When it was first asked.
    pub first_asked: Timestamp,
    /// When it was last asked.
    pub last_asked: Timestamp,
    /// Its distinct wordings, most asked first (the representative first), at most
    /// [`MAX_EXAMPLES`].
    pub examples: Vec<String>,
    /// The conversations it was asked in, newest first, at most [`MAX_CONVERSATIONS`].
    pub conversations: Vec<String>,
    /// Every entry of the group (row ids, oldest first).
    pub entries: Vec<i64>,
}

/// A question's wording, as two askings of it are the same: letters and digits in lower
/// case, punctuation and spacing aside (`Do you ship to Mars?` is `do you ship to mars`).
fn normalized(question: &str) -> String {
    let mut out = String::new();
    for word in truncate_chars(question, 300)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

fn fnv(parts: impl Iterator<Item = char>) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for c in parts {
        for b in (c as u32).to_le_bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// The distinct tokens of the questions being grouped, and which are one word
/// ([`alike`]), found once for the whole log.
#[derive(Default)]
struct Vocabulary {
    ids: HashMap<Vec<char>, u32>,
    words: Vec<Vec<char>>,
    /// Per token, the other tokens that are the same word, sorted.
    alike: Vec<Vec<u32>>,
}

impl Vocabulary {
    fn id(&mut self, word: Vec<char>) -> u32 {
        if let Some(&id) = self.ids.get(&word) {
            return id;
        }
        let id = self.words.len() as u32;
        self.words.push(word.clone());
        self.ids.insert(word, id);
        id
    }

    fn len(&self, id: u32) -> usize {
        self.words[id as usize].len()
    }

    /// Finds which tokens are one word. Only words sharing their first or their second
    /// letter are compared (a misspelled first letter is the price), at most
    /// [`MAX_WORD_PAIRS`] pairs: a log of unusually many distinct words compares the rest
    /// exactly.
    fn link(&mut self) {
        self.alike = vec![Vec::new(); self.words.len()];
        let mut by_first: BTreeMap<char, Vec<u32>> = BTreeMap::new();
        let mut by_second: BTreeMap<char, Vec<u32>> = BTreeMap::new();
        for (id, w) in self.words.iter().enumerate() {
            if w.len() >= 3 && w.len() <= MAX_FUZZY_CHARS && is_word(w) {
                by_first.entry(w[0]).or_default().push(id as u32);
                by_second.entry(w[1]).or_default().push(id as u32);
            }
        }
        let mut budget = MAX_WORD_PAIRS;
        for (bucket, second) in by_first
            .values()
            .map(|b| (b, false))
            .chain(by_second.values().map(|b| (b, true)))
        {
            for (n, &a) in bucket.iter().enumerate() {
                for &b in &bucket[n + 1..] {
                    let (x, y) = (&self.words[a as usize], &self.words[b as usize]);
                    // A pair sharing both letters was compared in its first letter's bucket.
                    if second && x[0] == y[0] {
                        continue;
                    }
                    if budget == 0 {
                        return self.sort();
                    }
                    budget -= 1;
                    if alike(x, y) {
                        self.alike[a as usize].push(b);
                        self.alike[b as usize].push(a);
                    }
                }
            }
        }
        self.sort();
    }

    fn sort(&mut self) {
        for list in &mut self.alike {
            crate::sort::sort(list);
        }
    }
}

/// A hasher for trigram hashes, which are already well mixed: SipHash would cost more
/// than the lookup it serves.
#[derive(Default)]
struct TrigramHasher(u64);

impl Hasher for TrigramHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A question as it is compared.
struct Asked {
    /// Its tokens, distinct (ids in the [`Vocabulary`]), sorted.
    words: Vec<u32>,
    /// Its tokens and every token that is one word with one of them, sorted: another
    /// question's token matches one of this question's exactly when it is in here.
    reach: Vec<u32>,
    /// The sum of their lengths in characters.
    weight: usize,
    /// Hashes of the tokens' trigrams (a Chinese window whole), sorted and distinct: how
    /// the groups worth comparing with are found.
    trigrams: Vec<u32>,
}

impl Asked {
    fn new(question: &str, vocabulary: &mut Vocabulary) -> Self {
        let mut words: Vec<Vec<char>> = Vec::new();
        for token in offline::tokens(truncate_chars(question, 300)) {
            if words.len() >= MAX_WORDS {
                break;
            }
            let chars: Vec<char> = token.chars().collect();
            let keep = if chars.iter().all(|&c| is_han(c)) {
                !chars.iter().any(|c| FILLER_CJK.contains(c))
            } else {
                (chars.len() > 1 || chars.iter().all(char::is_ascii_digit))
                    && !FILLER_WORDS.contains(&token.as_str())
            };
            if keep && !words.contains(&chars) {
                words.push(chars);
            }
        }
        let mut trigrams = Vec::new();
        for w in &words {
            if w.iter().all(|&c| is_han(c)) {
                trigrams.push(fnv(w.iter().copied()));
            } else {
                let marked: Vec<char> = core::iter::once('^')
                    .chain(w.iter().copied())
                    .chain(core::iter::once('$'))
                    .collect();
                trigrams.extend(marked.windows(3).map(|t| fnv(t.iter().copied())));
            }
        }
        crate::sort::sort(&mut trigrams);
        trigrams.dedup();
        let mut words: Vec<u32> = words.into_iter().map(|w| vocabulary.id(w)).collect();
        crate::sort::sort(&mut words);
        Asked {
            weight: words.iter().map(|&w| vocabulary.len(w)).sum(),
            words,
            reach: Vec::new(),
            trigrams,
        }
    }

    /// Fills [`Asked::reach`], once the vocabulary is linked.
    fn reach(&mut self, vocabulary: &Vocabulary) {
        let mut reach = self.words.clone();
        for &w in &self.words {
            reach.extend_from_slice(&vocabulary.alike[w as usize]);
        }
        crate::sort::sort(&mut reach);
        reach.dedup();
        self.reach = reach;
    }
}

/// A token of letters of a script written with spaces (a Chinese window is not one).
fn is_word(w: &[char]) -> bool {
    w.iter().all(|c| c.is_alphabetic() && !is_han(*c))
}

/// Whether two tokens are one word (see the module documentation).
fn alike(a: &[char], b: &[char]) -> bool {
    if a == b {
        return true;
    }
    if !is_word(a) || !is_word(b) {
        return false;
    }
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if long.starts_with(short) {
        let rest: String = long[short.len()..].iter().collect();
        if short.len() >= 4 || (short.len() == 3 && SUFFIXES.contains(&rest.as_str())) {
            return true;
        }
    }
    let allowed = match short.len() {
        0..=3 => return false,
        4..=7 => 1,
        _ => 2,
    };
    long.len() <= MAX_FUZZY_CHARS
        && long.len() - short.len() <= allowed
        && within_edits(a, b, allowed)
}

/// Whether `a` becomes `b` in at most `k` edits (optimal string alignment: insertions,
/// deletions, substitutions and swaps of neighbours), for words of at most
/// [`MAX_FUZZY_CHARS`] characters.
fn within_edits(a: &[char], b: &[char], k: usize) -> bool {
    // Each edit moves at most two letters in or out of a word's bag of letters, so words
    // whose bags differ by more are rejected before the table is filled (most pairs).
    let mut bag = [0i8; 32];
    for &c in a {
        bag[c as usize & 31] += 1;
    }
    for &c in b {
        bag[c as usize & 31] -= 1;
    }
    if bag
        .iter()
        .map(|n| usize::from(n.unsigned_abs()))
        .sum::<usize>()
        > 2 * k
    {
        return false;
    }
    const W: usize = MAX_FUZZY_CHARS + 1;
    let (mut before, mut above, mut row) = ([0usize; W], [0usize; W], [0usize; W]);
    for (j, cell) in above.iter_mut().enumerate().take(b.len() + 1) {
        *cell = j;
    }
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (above[j] + 1).min(row[j - 1] + 1).min(above[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(before[j - 2] + 1);
            }
            row[j] = v;
        }
        before = above;
        above = row;
    }
    above[b.len()] <= k
}

fn score(a: &Asked, b: &Asked, vocabulary: &Vocabulary) -> f64 {
    if a.weight == 0 || b.weight == 0 {
        return 0.0;
    }
    // The weight of `x`'s tokens in `reach` (both sorted).
    let matched = |x: &[u32], reach: &[u32]| -> usize {
        let (mut i, mut j, mut sum) = (0, 0, 0);
        while i < x.len() && j < reach.len() {
            match x[i].cmp(&reach[j]) {
                core::cmp::Ordering::Less => i += 1,
                core::cmp::Ordering::Greater => j += 1,
                core::cmp::Ordering::Equal => {
                    sum += vocabulary.len(x[i]);
                    i += 1;
                    j += 1;
                }
            }
        }
        sum
    };
    (matched(&a.words, &b.reach) + matched(&b.words, &a.reach)) as f64
        / (a.weight + b.weight) as f64
}

/// How alike two questions are, from 0 (nothing in common) to 1 (see the module
/// documentation); [`group_unanswered`] groups at [`GROUP_SIMILARITY`].
pub fn similarity(a: &str, b: &str) -> f64 {
    let mut vocabulary = Vocabulary::default();
    let (mut a, mut b) = (
        Asked::new(a, &mut vocabulary),
        Asked::new(b, &mut vocabulary),
    );
    vocabulary.link();
    a.reach(&vocabulary);
    b.reach(&vocabulary);
    score(&a, &b, &vocabulary)
}

/// Groups a tenant's logged questions (at most the newest
/// [`super::MAX_UNANSWERED_KEPT`] are read), counting "this week" back from `now`. Groups
/// come most asked this week first, then most asked in all, then most recently asked.
pub fn group_unanswered(entries: &[LoggedQuestion], now: Timestamp) -> Vec<QuestionGroup> {
    let mut entries: Vec<&LoggedQuestion> = entries.iter().collect();
    crate::sort::sort_by_key(&mut entries, |e| core::cmp::Reverse(e.id));
    entries.truncate(super::MAX_UNANSWERED_KEPT as usize);
    entries.reverse();

    let texts: Vec<String> = entries.iter().map(|e| normalized(&e.question)).collect();
    // Each distinct wording once, in the order first asked: a repeated question joins the
    // group of its first asking, with no comparison.
    let mut wording_of: HashMap<&str, usize> = HashMap::new();
    let mut firsts: Vec<usize> = Vec::new();
    let wording: Vec<usize> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            *wording_of.entry(t.as_str()).or_insert_with(|| {
                firsts.push(i);
                firsts.len() - 1
            })
        })
        .collect();
    let mut vocabulary = Vocabulary::default();
    let mut asked: Vec<Asked> = firsts
        .iter()
        .map(|&i| Asked::new(&entries[i].question, &mut vocabulary))
        .collect();
    vocabulary.link();
    for a in &mut asked {
        a.reach(&vocabulary);
    }

    // Per wording, its group; per group, its exemplars (wordings).
    let mut group_of: Vec<usize> = Vec::with_capacity(asked.len());
    let mut exemplars: Vec<Vec<usize>> = Vec::new();
    // Trigram → the groups whose exemplars have it (each group once).
    let mut postings: HashMap<u32, Vec<usize>, BuildHasherDefault<TrigramHasher>> =
        HashMap::default();
    // Per group: how many of this wording's trigrams it shares, and the wording that last
    // counted it (so the counts need no clearing between wordings).
    let mut shared: Vec<(usize, usize)> = Vec::new();
    for (i, a) in asked.iter().enumerate() {
        let mut candidates: Vec<usize> = Vec::new();
        for trigram in &a.trigrams {
            for &g in postings.get(trigram).map_or(&[][..], Vec::as_slice) {
                if shared[g].1 != i {
                    shared[g] = (0, i);
                    candidates.push(g);
                }
                shared[g].0 += 1;
            }
        }
        let rank = |&g: &usize| (core::cmp::Reverse(shared[g].0), g);
        if candidates.len() > MAX_CANDIDATES {
            candidates.select_nth_unstable_by_key(MAX_CANDIDATES, rank);
            candidates.truncate(MAX_CANDIDATES);
        }
        crate::sort::sort_by_key(&mut candidates, rank);
        let mut best: Option<(f64, usize)> = None;
        for &g in &candidates {
            let score = exemplars[g]
                .iter()
                .map(|&x| score(a, &asked[x], &vocabulary))
                .fold(0.0, f64::max);
            if score >= GROUP_SIMILARITY && best.is_none_or(|(s, _)| score > s) {
                best = Some((score, g));
            }
        }
        let g = best.map_or_else(
            || {
                exemplars.push(Vec::new());
                shared.push((0, usize::MAX));
                exemplars.len() - 1
            },
            |(_, g)| g,
        );
        group_of.push(g);
        if exemplars[g].len() < MAX_EXEMPLARS {
            exemplars[g].push(i);
            for trigram in &a.trigrams {
                let list = postings.entry(*trigram).or_default();
                if list.len() < MAX_POSTINGS && !list.contains(&g) {
                    list.push(g);
                }
            }
        }
    }
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); exemplars.len()];
    for (i, w) in wording.iter().enumerate() {
        members[group_of[*w]].push(i);
    }

    let week_start = now.as_millis().saturating_sub(WEEK_MS);
    let at = |i: usize| Timestamp::from_millis(u64::try_from(entries[i].at).unwrap_or(0));
    let mut out: Vec<QuestionGroup> = members
        .iter()
        .map(|members| {
            // Wordings by how often they were asked, the earliest first among equals.
            let mut wordings: BTreeMap<&str, (u32, usize)> = BTreeMap::new();
            for &i in members {
                wordings.entry(texts[i].as_str()).or_insert((0, i)).0 += 1;
            }
            let mut wordings: Vec<(u32, usize)> = wordings.into_values().collect();
            crate::sort::sort_by_key(&mut wordings, |&(n, first)| (core::cmp::Reverse(n), first));
            let examples: Vec<String> = wordings
                .iter()
                .take(MAX_EXAMPLES)
                .map(|&(_, i)| collapse_ws(&entries[i].question))
                .collect();
            let mut conversations: Vec<String> = Vec::new();
            for &i in members.iter().rev() {
                let c = &entries[i].conversation_id;
                if conversations.len() < MAX_CONVERSATIONS && !conversations.contains(c) {
                    conversations.push(c.clone());
                }
            }
            let times = members.iter().map(|&i| at(i));
            QuestionGroup {
                key: entries[members[0]].id.to_string(),
                question: examples[0].clone(),
                count: members.len() as u32,
                last_7_days: members
                    .iter()
                    .filter(|&&i| at(i).as_millis() >= week_start)
                    .count() as u32,
                first_asked: times.clone().min().unwrap_or(Timestamp::from_millis(0)),
                last_asked: times.max().unwrap_or(Timestamp::from_millis(0)),
                examples,
                conversations,
                entries: members.iter().map(|&i| entries[i].id).collect(),
            }
        })
        .collect();
    crate::sort::sort_by(&mut out, |a, b| {
        (b.last_7_days, b.count, b.last_asked)
            .cmp(&(a.last_7_days, a.count, a.last_asked))
            .then_with(|| a.entries[0].cmp(&b.entries[0]))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 60 * 60 * 1000;
    const NOW: i64 = 100 * DAY;

    fn log(questions: &[(&str, i64)]) -> Vec<LoggedQuestion> {
        questions
            .iter()
            .enumerate()
            .map(|(i, (q, days_ago))| LoggedQuestion {
                id: i as i64 + 1,
                at: NOW - days_ago * DAY,
                conversation_id: format!("c{i}"),
                question: (*q).to_owned(),
                reason: String::new(),
            })
            .collect()
    }

    fn groups(questions: &[&str]) -> Vec<Vec<String>> {
        let entries = log(&questions.iter().map(|q| (*q, 0)).collect::<Vec<_>>());
        let mut out: Vec<Vec<String>> =
            group_unanswered(&entries, Timestamp::from_millis(NOW as u64))
                .into_iter()
                .map(|g| {
                    g.entries
                        .iter()
                        .map(|id| questions[*id as usize - 1].to_owned())
                        .collect()
                })
                .collect();
        crate::sort::sort(&mut out);
        out
    }

    fn together(a: &str, b: &str) -> bool {
        groups(&[a, b]).len() == 1
    }

    #[test]
    fn paraphrases_and_misspellings_group() {
        for (a, b) in [
            ("How long does shipping take?", "how long does shiping take"),
            (
                "How long does shipping take?",
                "How long is shipping to Canada?",
            ),
            ("Do you ship to Mars?", "can you ship to mars please"),
            ("Can I pay with Bitcoin?", "do you accept bitcoin payments"),
            (
                "Is there a warranty on the phone case?",
                "phone case warranty??",
            ),
            ("Where can I find my refund?", "where is my refnud"),
            ("寄到北京要几天？", "寄到北京需要几天"),
            ("可以用支付宝付款吗", "支付宝付款可以吗？"),
        ] {
            assert!(together(a, b), "{a:?} and {b:?} should group");
        }
    }

    #[test]
    fn unrelated_questions_stay_apart() {
        for (a, b) in [
            ("How long does shipping take?", "How long is the warranty?"),
            ("How do I reset my password?", "How do I cancel my order?"),
            ("Do you ship to Mars?", "Do you sell gift cards?"),
            ("Can I pay with Bitcoin?", "Can I pay in installments?"),
            ("寄到北京要几天？", "可以退货吗？"),
            ("怎么修改收货地址", "怎么申请发票"),
            ("How long does shipping take?", "寄到北京要几天？"),
            ("hi", "thanks"),
        ] {
            assert!(!together(a, b), "{a:?} and {b:?} should stay apart");
        }
    }

    #[test]
    fn a_mixed_log_groups_with_counts_and_a_representative() {
        let entries = log(&[
            ("Do you ship to Mars?", 30),
            ("How do I reset my password?", 20),
            ("do you ship to mars", 6),
            ("Can you ship to Mars please", 3),
            ("寄到北京要几天？", 2),
            ("do you ship to mars", 1),
            ("寄到北京需要几天", 0),
        ]);
        let out = group_unanswered(&entries, Timestamp::from_millis(NOW as u64));
        assert_eq!(out.len(), 3, "{out:#?}");
        let mars = &out[0];
        assert_eq!(mars.key, "1");
        assert_eq!((mars.count, mars.last_7_days), (4, 3));
        // Three askings of one wording (punctuation and case aside), shown as first asked.
        assert_eq!(mars.question, "Do you ship to Mars?");
        assert_eq!(
            mars.examples,
            ["Do you ship to Mars?", "Can you ship to Mars please"]
        );
        assert_eq!(mars.conversations, ["c5", "c3", "c2", "c0"]);
        assert_eq!(mars.entries, [1, 3, 4, 6]);
        assert_eq!(mars.first_asked.as_millis(), (NOW - 30 * DAY) as u64);
        assert_eq!(mars.last_asked.as_millis(), (NOW - DAY) as u64);
        let beijing = &out[1];
        assert_eq!(
            (beijing.key.as_str(), beijing.count, beijing.last_7_days),
            ("5", 2, 2)
        );
        let password = &out[2];
        assert_eq!((password.count, password.last_7_days), (1, 0));
    }

    #[test]
    fn keys_stay_while_questions_join() {
        let mut entries = log(&[
            ("Do you ship to Mars?", 3),
            ("Do you sell gift cards?", 2),
            ("ship to mars?", 1),
        ]);
        let now = Timestamp::from_millis(NOW as u64);
        let keys = |e: &[LoggedQuestion]| {
            let mut k: Vec<String> = group_unanswered(e, now)
                .into_iter()
                .map(|g| g.key)
                .collect();
            k.sort();
            k
        };
        let before = keys(&entries);
        entries.push(LoggedQuestion {
            id: 10,
            at: NOW,
            conversation_id: "c9".into(),
            question: "gift card for sale?".into(),
            reason: String::new(),
        });
        assert_eq!(keys(&entries), before);
        // The order entries arrive in does not matter: they are read by id.
        entries.reverse();
        assert_eq!(keys(&entries), before);
    }

    #[test]
    fn a_full_log_of_distinct_questions_is_grouped_in_bounded_work() {
        let entries: Vec<LoggedQuestion> = (0..1500)
            .map(|i| LoggedQuestion {
                id: i,
                at: NOW,
                conversation_id: format!("c{i}"),
                question: format!(
                    "question number {i} about product{} and topic{}",
                    i % 37,
                    i % 101
                ),
                reason: String::new(),
            })
            .collect();
        let out = group_unanswered(&entries, Timestamp::from_millis(NOW as u64));
        let total: u32 = out.iter().map(|g| g.count).sum();
        assert_eq!(total, 1000, "only the newest 1000 are read");
        assert!(out.iter().all(|g| g.entries.iter().all(|&id| id >= 500)));
    }
}
