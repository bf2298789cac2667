//! The turn's unit tests (whole turns are driven through the simulator in `tests/`).

use super::prompt::split_for_streaming;

#[test]
fn streaming_pieces_concatenate() {
    for t in [
        "Hello there, friend.",
        "你好！我是 Kefu。你可以问我：Kefu 是什么",
        "",
        "x",
    ] {
        assert_eq!(split_for_streaming(t).concat(), t);
    }
    assert!(split_for_streaming("one two three").len() == 3);
}
