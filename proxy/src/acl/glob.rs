//! Redis' glob matcher (`stringmatchlen` in util.c, 7.0), byte for byte: `*`, `?`,
//! `[...]` with ranges, `^` negation and `\` escapes, the same treatment of
//! malformed patterns (an unclosed `[`), and the same signed-`char` ranges.

/// Patterns nested deeper than this (many `*`) never match, as in Redis.
const MAX_NESTING: u32 = 1000;

/// True when `string` matches the glob `pattern` (case-sensitive).
pub fn matches(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    match_impl(pattern, string, &mut skip_longer, 0)
}

/// The byte at `i`, or 0 past the end (Redis reads the string's terminating NUL).
fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

fn match_impl(pattern: &[u8], string: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    // Positions and remaining lengths, as the C code walks its pointers.
    let (mut p, mut plen) = (0usize, pattern.len() as isize);
    let (mut s, mut slen) = (0usize, string.len() as isize);
    while plen > 0 && slen > 0 {
        match at(pattern, p) {
            b'*' => {
                while plen > 0 && at(pattern, p + 1) == b'*' {
                    p += 1;
                    plen -= 1;
                }
                if plen == 1 {
                    return true;
                }
                while slen > 0 {
                    if match_impl(
                        pattern.get(p + 1..).unwrap_or(&[]),
                        string.get(s..).unwrap_or(&[]),
                        skip_longer,
                        nesting + 1,
                    ) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s += 1;
                    slen -= 1;
                }
                *skip_longer = true;
                return false;
            }
            b'?' => {
                s += 1;
                slen -= 1;
            }
            b'[' => {
                p += 1;
                plen -= 1;
                let not = at(pattern, p) == b'^';
                if not {
                    p += 1;
                    plen -= 1;
                }
                let c = at(string, s);
                let mut matched = false;
                loop {
                    if at(pattern, p) == b'\\' && plen >= 2 {
                        p += 1;
                        plen -= 1;
                        if at(pattern, p) == c {
                            matched = true;
                        }
                    } else if at(pattern, p) == b']' {
                        break;
                    } else if plen == 0 {
                        p -= 1;
                        plen += 1;
                        break;
                    } else if plen >= 3 && at(pattern, p + 1) == b'-' {
                        // `char` is signed in Redis' build: bytes >= 0x80 sort first.
                        let mut start = at(pattern, p) as i8;
                        let mut end = at(pattern, p + 2) as i8;
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        p += 2;
                        plen -= 2;
                        let ci = c as i8;
                        if ci >= start && ci <= end {
                            matched = true;
                        }
                    } else if at(pattern, p) == c {
                        matched = true;
                    }
                    p += 1;
                    plen -= 1;
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s += 1;
                slen -= 1;
            }
            _ => {
                // A literal byte; `\` takes the next one literally.
                if at(pattern, p) == b'\\' && plen >= 2 {
                    p += 1;
                    plen -= 1;
                }
                if at(pattern, p) != at(string, s) {
                    return false;
                }
                s += 1;
                slen -= 1;
            }
        }
        p += 1;
        plen -= 1;
        if slen == 0 {
            while at(pattern, p) == b'*' && plen > 0 {
                p += 1;
                plen -= 1;
            }
            break;
        }
    }
    plen == 0 && slen == 0
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn redis_glob_cases() {
        let yes: &[(&str, &str)] = &[
            ("*", "abc"),
            ("app:*", "app:1"),
            ("a?c", "abc"),
            ("[abc]x", "bx"),
            ("[^abc]x", "dx"),
            ("[a-c]x", "bx"),
            ("[c-a]x", "bx"),
            ("a\\*b", "a*b"),
            ("[\\]]", "]"),
            ("a*", "a"),
            ("a**", "a"),
            ("*a*b", "xaxb"),
            ("[a", "a"),
            ("ab\\", "ab\\"),
        ];
        for (p, s) in yes {
            assert!(matches(p.as_bytes(), s.as_bytes()), "{p} ~ {s}");
        }
        let no: &[(&str, &str)] = &[
            ("app:*", "other"),
            ("", "a"),
            ("a", ""),
            ("a?c", "ac"),
            ("[^abc]x", "ax"),
            ("a\\*b", "axb"),
            ("*a*b", "xaxc"),
            ("APP:*", "app:1"),
            ("?", ""),
            // The loop never runs for an empty string: Redis' `*` does not match "".
            ("*", ""),
        ];
        for (p, s) in no {
            assert!(!matches(p.as_bytes(), s.as_bytes()), "{p} !~ {s}");
        }
        assert!(matches(b"", b""));
    }
}
