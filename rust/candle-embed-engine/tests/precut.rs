//! The pre-cut of long texts (src/precut.rs) against tokenizing everything, on the real Qwen3
//! vocabulary (../shared/qwen3-tokenizer): for adversarial texts — long runs of one character,
//! no spaces, CJK, emoji sequences, combining marks, mixed scripts, digits, special tokens whole
//! and broken, odd whitespace — and limits from 1 token up, a truncated text gets exactly the
//! first tokens of the whole text's tokenization, and an over-long one is refused exactly when
//! the whole text is over the limit.

use std::path::PathBuf;

use candle_embed_engine::request::TruncationSide;
use candle_embed_engine::tokenize::{EmbeddingTokenizer, LengthLimit};

fn vocabulary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/qwen3-tokenizer/tokenizer.json");
    assert!(
        path.is_file(),
        "{} is missing: these tests need the real Qwen3 vocabulary beside the repository (../shared)",
        path.display()
    );
    path
}

/// A small deterministic generator (the texts must be the same on every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next() as usize % items.len()]
    }
}

#[allow(clippy::too_many_lines)] // a table of texts, longer than it is complex
fn texts() -> Vec<(String, String)> {
    let mut rng = Rng(7);
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, text: String| out.push((name.to_owned(), text));
    for c in [
        "a", " ", "\n", "。", "😀", "=", "1", "é", "\u{301}", "\t", "ab", "中",
    ] {
        add(&format!("run of {c:?}"), c.repeat(6000));
    }
    let letters: Vec<String> = (0..26).map(|i| char::from(b'a' + i).to_string()).collect();
    let letters: Vec<&str> = letters.iter().map(String::as_str).collect();
    add(
        "no spaces",
        (0..20000).map(|_| rng.pick(&letters)).collect(),
    );
    let cjk = [
        "中",
        "国",
        "的",
        "首",
        "都",
        "是",
        "北",
        "京",
        "。",
        "，",
        "人",
        "工",
        "智",
        "能",
        "日本語",
        "한국어",
    ];
    add("CJK", (0..8000).map(|_| rng.pick(&cjk)).collect());
    let emoji = [
        "😀",
        "👍🏽",
        "👨\u{200d}👩\u{200d}👧\u{200d}👦",
        "🇯🇵",
        "🏳️\u{200d}🌈",
        "❤️",
        " ",
        "🎉",
    ];
    add("emoji", (0..6000).map(|_| rng.pick(&emoji)).collect());
    let marks = [
        "e", "\u{301}", "\u{308}", "a", "\u{30a}", "n", "\u{303}", " ", "\u{327}", "c",
    ];
    add(
        "combining marks",
        (0..15000).map(|_| rng.pick(&marks)).collect(),
    );
    let mixed = [
        "hello",
        " ",
        "мир",
        "世界",
        "مرحبا",
        "שלום",
        "नमस्ते",
        "123",
        "4.5",
        "\n",
        "😀",
        "ÅÖ",
        "'s",
        "'re",
        "--",
        "...",
        "\r\n",
        "  ",
    ];
    add(
        "mixed scripts",
        (0..10000).map(|_| rng.pick(&mixed)).collect(),
    );
    add(
        "digits",
        (0..20000)
            .map(|i| char::from(b'0' + (i * 7 % 10) as u8))
            .collect(),
    );
    let specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext",
        "|>",
        "<|",
        "text",
        " ",
        "<think>",
        "\n",
    ];
    add(
        "special tokens",
        (0..8000).map(|_| rng.pick(&specials)).collect(),
    );
    let spaces = [" ", "\t", "\n", "\r\n", "\u{a0}", "\u{3000}", "x", "  \n"];
    add(
        "whitespace",
        (0..20000).map(|_| rng.pick(&spaces)).collect(),
    );
    let words = [
        "The", " quick", " brown", " fox", ",", " jumps", " over", " the", " lazy", " dog", ".",
        "\n\n",
    ];
    add("prose", (0..15000).map(|_| rng.pick(&words)).collect());
    out
}

#[test]
fn every_cut_head_is_a_prefix_of_the_whole_tokenization() {
    // The strong property: not only the kept tokens, every token of the cut head is final.
    let path = vocabulary();
    let ours = EmbeddingTokenizer::from_file(&path).unwrap();
    let reference = tokenizers::Tokenizer::from_file(&path).unwrap();
    let mut cut = 0;
    for (name, text) in texts() {
        let whole: Vec<u32> = reference
            .encode(text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        for need in [1, 2, 8, 65, 301, 1001] {
            if let Some(head) = ours.precut_head(&text, need).unwrap() {
                cut += 1;
                assert!(head.len() >= need, "{name}, need {need}");
                assert_eq!(head[..], whole[..head.len()], "{name}, need {need}");
            }
        }
    }
    assert!(
        cut >= 40,
        "only {cut} texts were cut: the test would not see a wrong cut"
    );
}

#[test]
fn cut_texts_tokenize_exactly_as_the_whole_text_truncated() {
    let path = vocabulary();
    let ours = EmbeddingTokenizer::from_file(&path).unwrap();
    let reference = tokenizers::Tokenizer::from_file(&path).unwrap();
    let eos = ours.eos_id();
    // The base vocabulary appends nothing: the engine adds the one <|endoftext|>.
    assert!(!ours.appends_eos());
    let reserved = 1;
    for (name, text) in texts() {
        let whole: Vec<u32> = reference
            .encode(text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        for max_tokens in [1, 2, 7, 64, 300, 1000] {
            let room = max_tokens - reserved;
            // Truncated from the right: the whole text's first tokens, then <|endoftext|>.
            let limit = LengthLimit {
                max_tokens,
                truncate: true,
                side: TruncationSide::Right,
            };
            let got = ours.encode_text(0, &text, &limit).unwrap();
            let mut want: Vec<u32> = whole.iter().copied().take(room).collect();
            want.push(eos);
            assert_eq!(got, want, "{name}, max_tokens {max_tokens}");
            // Not truncated: refused exactly when the whole text is too long.
            let limit = LengthLimit {
                max_tokens,
                truncate: false,
                side: TruncationSide::Right,
            };
            let refused = ours.encode_text(0, &text, &limit).is_err();
            assert_eq!(
                refused,
                whole.len() + reserved > max_tokens,
                "{name}, max_tokens {max_tokens}"
            );
        }
    }
}
