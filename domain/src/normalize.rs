//! Input normalisation shared by the code-like newtypes: trims surrounding
//! whitespace (including the ideographic space) and folds full-width ASCII
//! (`０-９`, `Ａ-Ｚ`, `ａ-ｚ`), which Chinese input methods often produce, to
//! half-width. Must not check anything: the newtypes do that.

/// Trims and folds full-width ASCII letters and digits to half-width.
pub fn fold_ascii(input: &str) -> String {
    input
        .trim_matches(|c: char| c.is_whitespace() || c == '\u{3000}')
        .chars()
        .map(|c| match c {
            '\u{FF10}'..='\u{FF19}' | '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}' => {
                char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
            }
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_width_digits_and_letters_are_folded_and_trimmed() {
        assert_eq!(fold_ascii("\u{3000} １３８ａＢ "), "138aB");
    }
}
