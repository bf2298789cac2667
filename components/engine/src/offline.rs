//! The offline responder: keyword auto-reply from rules and a FAQ, for when no model is
//! configured (or none is wanted).
//!
//! It is a real, deterministic responder, not an imitation of a model: it matches the
//! visitor's words against the tenant's FAQ first, then a few built-in rules and a small
//! built-in FAQ about Kefu itself, and always says that it is the offline responder. It
//! answers in Chinese when the visitor writes Chinese, in English otherwise.

use serde::{Deserialize, Serialize};

/// A question the offline responder can answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaqEntry {
    /// The question, as a visitor might ask it.
    pub question: String,
    /// The answer given.
    pub answer: String,
    /// Extra words that point at this entry (the question's own words count too).
    #[serde(default)]
    pub keywords: Vec<String>,
}

/// The visitor's language, as far as the offline responder can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// English (the default).
    En,
    /// Chinese.
    Zh,
}

/// Guesses the language from the script: any CJK ideograph means Chinese.
pub fn detect_lang(text: &str) -> Lang {
    if text.chars().any(is_cjk) {
        Lang::Zh
    } else {
        Lang::En
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}')
}

/// Splits text into match tokens: lower-case, lightly stemmed words for alphabetic scripts;
/// for Chinese (which has no spaces between words) each pair of adjacent ideographs, or the
/// ideograph itself when it stands alone.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut run: Vec<char> = Vec::new();
    for c in text.chars() {
        if is_cjk(c) {
            flush(&mut word, &mut out);
            if let Some(&p) = run.last() {
                out.push(format!("{p}{c}"));
            }
            run.push(c);
        } else {
            flush_run(&mut run, &mut out);
            if c.is_alphanumeric() {
                word.extend(c.to_lowercase());
            } else {
                flush(&mut word, &mut out);
            }
        }
    }
    flush(&mut word, &mut out);
    flush_run(&mut run, &mut out);
    out
}

fn flush_run(run: &mut Vec<char>, out: &mut Vec<String>) {
    if let [c] = run.as_slice()
        && !STOP_WORDS.contains(&c.to_string().as_str())
    {
        out.push(c.to_string());
    }
    run.clear();
}

fn flush(word: &mut String, out: &mut Vec<String>) {
    if !word.is_empty() {
        // A light stemmer, applied to questions and keywords alike: "prices" finds "price",
        // "deploying" finds "deploy".
        let w = core::mem::take(word);
        if STOP_WORDS.contains(&w.as_str()) {
            return;
        }
        let stem = ["ing", "s"]
            .iter()
            .find_map(|suf| w.strip_suffix(suf).filter(|s| s.len() >= 3))
            .unwrap_or(&w)
            .to_owned();
        if !STOP_WORDS.contains(&stem.as_str()) {
            out.push(stem);
        }
    }
}

const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "be", "to", "of", "and", "or", "in", "on", "for", "with",
    "do", "does", "i", "me", "my", "you", "your", "it", "its", "can", "could", "what", "how",
    "where", "when", "which", "who", "why", "this", "that", "there", "please", "would", "will",
    "we", "our", "us", "at", "by", "from", "about", "am", "if", "so", "not", "any", "some", "的",
    "了", "吗", "我", "你", "是", "在", "么", "怎", "呢", "吧", "啊",
];

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intent {
    Human,
    Greeting,
    Thanks,
    Goodbye,
}

/// Built-in rules: (intent, trigger tokens). Checked in order; the first with a hit wins.
const RULES: &[(Intent, &[&str])] = &[
    (
        Intent::Human,
        &[
            "human",
            "agent",
            "person",
            "representative",
            "operator",
            "someone",
            "人工",
            "真人",
            "客服",
        ],
    ),
    (
        Intent::Thanks,
        &["thank", "thanks", "thx", "谢谢", "多谢", "感谢"],
    ),
    (Intent::Goodbye, &["bye", "goodbye", "再见", "拜拜"]),
    (
        Intent::Greeting,
        &["hi", "hello", "hey", "hallo", "你好", "您好", "嗨"],
    ),
];

struct BuiltinFaq {
    keys: &'static [&'static str],
    en: &'static str,
    zh: &'static str,
}

/// The built-in FAQ is about Kefu itself: the only business it can speak for truthfully.
const BUILTIN_FAQ: &[BuiltinFaq] = &[
    BuiltinFaq {
        keys: &["kefu", "什么", "介绍", "product", "who", "客服系统"],
        en: "Kefu is an open-source AI customer-service system that runs at the edge, on Cloudflare Workers or Fermyon Spin. It answers visitors with a language model, hands over to human agents, and works with no servers to run.",
        zh: "Kefu 是一个开源的 AI 客服系统，运行在边缘（Cloudflare Workers 或 Fermyon Spin）上：用大语言模型回答访客，必要时转人工，无需自己运维服务器。",
    },
    BuiltinFaq {
        keys: &[
            "model",
            "provider",
            "openai",
            "api",
            "key",
            "llm",
            "gpt",
            "configure",
            "config",
            "setup",
            "模型",
            "配置",
            "密钥",
        ],
        en: "To answer with a language model, set KEFU_PROVIDER_BASE_URL (for example https://api.openai.com/v1) and the secret KEFU_PROVIDER_API_KEY, or store a tenant configuration with a `provider` in KV. Any OpenAI-compatible endpoint works.",
        zh: "要用大语言模型回答，请设置 KEFU_PROVIDER_BASE_URL（例如 https://api.openai.com/v1）和密钥 KEFU_PROVIDER_API_KEY，或在 KV 中保存带 `provider` 的租户配置。任何兼容 OpenAI 的接口都可以。",
    },
    BuiltinFaq {
        keys: &[
            "deploy",
            "install",
            "host",
            "run",
            "wrangler",
            "cloudflare",
            "spin",
            "部署",
            "安装",
        ],
        en: "Deploy Kefu with `npx wrangler deploy` on Cloudflare Workers; locally, `make dev` runs it on the real Workers runtime.",
        zh: "在 Cloudflare Workers 上用 `npx wrangler deploy` 部署；本地用 `make dev` 在真实的 Workers 运行时上启动。",
    },
    BuiltinFaq {
        keys: &[
            "price", "pricing", "cost", "free", "license", "open", "source", "价格", "免费",
            "开源", "收费",
        ],
        en: "Kefu is open source (Apache-2.0) and free to use. It is built to fit the Workers free plan; you pay only your model provider for the tokens you use.",
        zh: "Kefu 是开源的（Apache-2.0），可免费使用，按设计可运行在 Workers 免费套餐内；你只需向模型服务商支付实际使用的 token 费用。",
    },
    BuiltinFaq {
        keys: &[
            "data", "privacy", "stored", "store", "storage", "gdpr", "数据", "隐私", "存储",
        ],
        en: "Each conversation is stored in its own Durable Object in your Cloudflare account; nothing leaves it except the prompts sent to the model provider you configure.",
        zh: "每个会话都保存在你自己 Cloudflare 账户中的独立 Durable Object 里；除了发送给你所配置的模型服务商的提示词外，数据不会离开你的账户。",
    },
];

const SIGNATURE_EN: &str = "\n\n— Kefu offline responder (no AI model is configured; I answer from built-in rules and FAQ)";
const SIGNATURE_ZH: &str = "\n\n— Kefu 离线应答（未配置 AI 模型，我根据内置规则和常见问题作答）";

/// Answers a visitor's message offline. Always returns an answer, and every answer says
/// that it comes from the offline responder.
pub fn answer(tenant_faq: &[FaqEntry], bot_name: Option<&str>, text: &str) -> String {
    let lang = detect_lang(text);
    let query = tokens(text);
    let body = tenant_answer(tenant_faq, &query)
        .or_else(|| rule_answer(&query, lang, bot_name))
        .or_else(|| builtin_faq_answer(&query, lang))
        .unwrap_or_else(|| fallback(lang));
    let signature = match lang {
        Lang::En => SIGNATURE_EN,
        Lang::Zh => SIGNATURE_ZH,
    };
    format!("{body}{signature}")
}

fn overlap(query: &[String], keys: impl IntoIterator<Item = String>) -> usize {
    let keys: Vec<String> = keys.into_iter().collect();
    let mut seen: Vec<&str> = Vec::new();
    query
        .iter()
        .filter(|q| {
            keys.contains(q) && !seen.contains(&q.as_str()) && {
                seen.push(q);
                true
            }
        })
        .count()
}

fn tenant_answer(faq: &[FaqEntry], query: &[String]) -> Option<String> {
    faq.iter()
        .map(|e| {
            // A keyword the operator chose counts double: it is a deliberate pointer.
            let q = overlap(query, tokens(&e.question));
            let k = overlap(query, e.keywords.iter().flat_map(|k| tokens(k)));
            (2 * k + q, e)
        })
        .filter(|(score, _)| *score >= 2)
        .max_by_key(|(score, _)| *score)
        .map(|(_, e)| e.answer.clone())
}

/// Whether the visitor is asking for a person ("talk to a human", "转人工", "agent please").
pub fn wants_human(text: &str) -> bool {
    let query = tokens(text);
    RULES
        .iter()
        .filter(|(intent, _)| *intent == Intent::Human)
        .any(|(_, keys)| {
            keys.iter()
                .any(|k| tokens(k).iter().any(|t| query.contains(t)))
        })
}

fn rule_answer(query: &[String], lang: Lang, bot_name: Option<&str>) -> Option<String> {
    let name = bot_name.unwrap_or("Kefu");
    let intent = RULES
        .iter()
        .find(|(_, keys)| {
            keys.iter()
                .any(|k| tokens(k).iter().any(|t| query.contains(t)))
        })
        .map(|(intent, _)| *intent)?;
    Some(match (intent, lang) {
        (Intent::Human, Lang::En) => "I've noted that you'd like to talk to a person. I can't connect you to a live agent from offline mode, but this conversation is saved, so the team can read it and follow up.".to_owned(),
        (Intent::Human, Lang::Zh) => "已记录你希望联系人工客服。离线模式下我无法为你接通在线客服，但本次对话已保存，团队可以查看并跟进。".to_owned(),
        (Intent::Thanks, Lang::En) => "You're welcome! Is there anything else I can help with?".to_owned(),
        (Intent::Thanks, Lang::Zh) => "不客气！还有什么可以帮你的吗？".to_owned(),
        (Intent::Goodbye, Lang::En) => "Goodbye, and thanks for stopping by!".to_owned(),
        (Intent::Goodbye, Lang::Zh) => "再见，感谢你的来访！".to_owned(),
        (Intent::Greeting, Lang::En) => format!("Hello! I'm {name}. Ask me about what Kefu is, how to connect a model provider, deployment, pricing or data privacy."),
        (Intent::Greeting, Lang::Zh) => format!("你好！我是 {name}。你可以问我：Kefu 是什么、如何配置模型、如何部署、价格或数据隐私。"),
    })
}

fn builtin_faq_answer(query: &[String], lang: Lang) -> Option<String> {
    BUILTIN_FAQ
        .iter()
        .map(|f| (overlap(query, f.keys.iter().flat_map(|k| tokens(k))), f))
        .filter(|(score, _)| *score >= 1)
        .max_by_key(|(score, _)| *score)
        .map(|(_, f)| match lang {
            Lang::En => f.en.to_owned(),
            Lang::Zh => f.zh.to_owned(),
        })
}

fn fallback(lang: Lang) -> String {
    match lang {
        Lang::En => "I'm sorry, I don't have an answer to that. I can tell you what Kefu is, how to connect a model provider, how to deploy it, what it costs and where data is stored.".to_owned(),
        Lang::Zh => "抱歉，这个问题我暂时无法回答。我可以介绍 Kefu 是什么、如何配置模型、如何部署、价格以及数据存储位置。".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_cover_both_scripts() {
        assert_eq!(tokens("How do I deploy Kefu?"), vec!["deploy", "kefu"]);
        assert_eq!(tokens("转人工"), vec!["转人", "人工"]);
        assert_eq!(tokens("嗨, hi"), vec!["嗨", "hi"]);
        assert_eq!(tokens("Prices"), vec!["price"]);
    }

    #[test]
    fn every_answer_says_it_is_offline() {
        for q in ["hello", "How do I talk to a human?", "qwerty zxcv", "你好"] {
            let a = answer(&[], None, q);
            assert!(
                a.contains("offline responder") || a.contains("离线应答"),
                "{q}: {a}"
            );
        }
    }

    #[test]
    fn asking_for_a_person_is_recognised() {
        for q in [
            "Can I talk to a human?",
            "agent please",
            "我要转人工",
            "有真人客服吗",
        ] {
            assert!(wants_human(q), "{q}");
        }
        assert!(!wants_human("How do I deploy?"));
        assert!(!wants_human("What does it cost?"));
    }

    #[test]
    fn rules_and_builtin_faq() {
        assert!(answer(&[], None, "Can I talk to a human agent?").contains("talk to a person"));
        assert!(answer(&[], None, "我要人工").contains("人工客服"));
        assert!(answer(&[], Some("Acme Bot"), "hi there").contains("Acme Bot"));
        assert!(answer(&[], None, "How do I deploy it?").contains("wrangler deploy"));
        assert!(answer(&[], None, "what does it cost").contains("Apache-2.0"));
        assert!(answer(&[], None, "怎么部署").contains("wrangler deploy"));
        assert!(answer(&[], None, "blorp").contains("don't have an answer"));
    }

    #[test]
    fn tenant_faq_comes_first_and_needs_a_real_match() {
        let faq = vec![FaqEntry {
            question: "What are your opening hours?".into(),
            answer: "We are open 9 to 5, Monday to Friday.".into(),
            keywords: vec!["hours".into(), "open".into()],
        }];
        assert!(
            answer(&faq, None, "When are you open? opening hours?")
                .starts_with("We are open 9 to 5")
        );
        // One weak word is not enough to claim an answer.
        assert!(!answer(&faq, None, "your").starts_with("We are open"));
    }
}
