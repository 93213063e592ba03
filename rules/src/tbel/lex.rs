//! TBEL's tokens: MVEL's literals (single- or double-quoted strings with
//! Java escapes; decimal, octal, hex and suffixed numbers), identifiers and
//! operators, each with the line and column it starts at.

use super::TbelError;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    /// A number, already written as JavaScript source.
    Num(String),
    /// A string literal's value (escapes decoded).
    Str(String),
    Punct(&'static str),
    Eof,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub tok: Tok,
    pub line: u32,
    pub col: u32,
}

/// Longest first, so that `>>>=` is not read as `>>` `>=`.
const PUNCTS: &[&str] = &[
    ">>>=", ">>>", "<<=", ">>=", "===", "!==", ".?", "==", "!=", "<=", ">=", "&&", "||", "++",
    "--", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "<<", ">>", "+", "-", "*", "/", "%", "=",
    "<", ">", "!", "~", "&", "|", "^", "?", ":", ";", ",", ".", "(", ")", "[", "]", "{", "}",
];

pub fn tokenize(src: &str) -> Result<Vec<Token>, TbelError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    let advance = |i: &mut usize, line: &mut u32, col: &mut u32, n: usize| {
        for _ in 0..n {
            if chars.get(*i) == Some(&'\n') {
                *line += 1;
                *col = 1;
            } else {
                *col += 1;
            }
            *i += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let (l0, c0) = (line, col);
        let err = |m: String| TbelError::at(l0, c0, m);
        if c.is_whitespace() {
            advance(&mut i, &mut line, &mut col, 1);
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                advance(&mut i, &mut line, &mut col, 1);
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            advance(&mut i, &mut line, &mut col, 2);
            loop {
                if i >= chars.len() {
                    return Err(err("unterminated comment".into()));
                }
                if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    advance(&mut i, &mut line, &mut col, 2);
                    break;
                }
                advance(&mut i, &mut line, &mut col, 1);
            }
            continue;
        }
        let tok = if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                advance(&mut i, &mut line, &mut col, 1);
            }
            Tok::Ident(chars[start..i].iter().collect())
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let (js, n) = number(&chars[i..]).map_err(err)?;
            advance(&mut i, &mut line, &mut col, n);
            Tok::Num(js)
        } else if c == '"' || c == '\'' {
            let (s, n) = string(&chars[i..]).map_err(err)?;
            advance(&mut i, &mut line, &mut col, n);
            Tok::Str(s)
        } else {
            let rest: String = chars[i..chars.len().min(i + 4)].iter().collect();
            match PUNCTS.iter().find(|p| rest.starts_with(**p)) {
                Some(p) => {
                    advance(&mut i, &mut line, &mut col, p.len());
                    Tok::Punct(p)
                }
                None => return Err(err(format!("unexpected character {c:?}"))),
            }
        };
        out.push(Token {
            tok,
            line: l0,
            col: c0,
        });
    }
    out.push(Token {
        tok: Tok::Eof,
        line,
        col,
    });
    Ok(out)
}

/// A numeric literal at the start of `s`: its JavaScript form and length.
/// Octal (`0353`) and hex are converted; Java's type suffixes (`L`, `d`,
/// `f`, `B`, `I`) are dropped, since every number is a double at run time.
fn number(s: &[char]) -> Result<(String, usize), String> {
    let mut n = 0;
    let take = |n: &mut usize, pred: &dyn Fn(char) -> bool| {
        while *n < s.len() && pred(s[*n]) {
            *n += 1;
        }
    };
    let js;
    if s[0] == '0' && matches!(s.get(1), Some('x' | 'X')) {
        n = 2;
        take(&mut n, &|c| c.is_ascii_hexdigit());
        let digits: String = s[2..n].iter().collect();
        if digits.is_empty() {
            return Err("a hex number needs digits after 0x".into());
        }
        js = format!("0x{digits}");
    } else {
        take(&mut n, &|c| c.is_ascii_digit());
        let mut float = false;
        if s.get(n) == Some(&'.') && s.get(n + 1).is_some_and(char::is_ascii_digit) {
            float = true;
            n += 1;
            take(&mut n, &|c| c.is_ascii_digit());
        }
        if matches!(s.get(n), Some('e' | 'E')) {
            let mut m = n + 1;
            if matches!(s.get(m), Some('+' | '-')) {
                m += 1;
            }
            if s.get(m).is_some_and(char::is_ascii_digit) {
                float = true;
                n = m;
                take(&mut n, &|c| c.is_ascii_digit());
            }
        }
        let text: String = s[..n].iter().collect();
        js = if !float && text.len() > 1 && text.starts_with('0') {
            if text.chars().any(|c| c > '7') {
                return Err(format!("{text} is not an octal number"));
            }
            format!("0o{}", &text[1..])
        } else if text.starts_with('.') {
            format!("0{text}")
        } else {
            text
        };
    }
    if matches!(
        s.get(n),
        Some('l' | 'L' | 'd' | 'D' | 'f' | 'F' | 'B' | 'I')
    ) {
        n += 1;
    }
    if s.get(n)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
    {
        return Err(format!("unexpected {:?} after a number", s[n]));
    }
    Ok((js, n))
}

/// A quoted string at the start of `s`: its value and length.
fn string(s: &[char]) -> Result<(String, usize), String> {
    let q = s[0];
    let mut out = String::new();
    let mut i = 1;
    loop {
        let Some(&c) = s.get(i) else {
            return Err("unterminated string".into());
        };
        i += 1;
        if c == q {
            return Ok((out, i));
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = s.get(i) else {
            return Err("unterminated string".into());
        };
        i += 1;
        match e {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                let mut k = 0;
                while k < 2 && s.get(i).is_some_and(|c| ('0'..='7').contains(c)) {
                    v = v * 8 + s[i].to_digit(8).unwrap_or(0);
                    i += 1;
                    k += 1;
                }
                out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
            }
            'u' => {
                let hex: String = s.get(i..i + 4).unwrap_or_default().iter().collect();
                let v = u32::from_str_radix(&hex, 16)
                    .map_err(|_| "\\u needs four hex digits".to_string())?;
                i += 4;
                out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
            }
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        tokenize(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn numbers_strings_and_operators() {
        assert_eq!(
            toks("0353 0xAFF0 10.503 94.92d 14.5f 7L 1e3 'a\\'b' \"\\u0041\\73\" >>>= .?"),
            vec![
                Tok::Num("0o353".into()),
                Tok::Num("0xAFF0".into()),
                Tok::Num("10.503".into()),
                Tok::Num("94.92".into()),
                Tok::Num("14.5".into()),
                Tok::Num("7".into()),
                Tok::Num("1e3".into()),
                Tok::Str("a'b".into()),
                Tok::Str("A;".into()),
                Tok::Punct(">>>="),
                Tok::Punct(".?"),
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn positions_and_errors_name_line_and_column() {
        let t = tokenize("a\n  // c\n  /* x\n */ b").unwrap();
        assert_eq!((t[1].line, t[1].col), (4, 5));
        let e = tokenize("var x = 1;\nvar y = 'open").unwrap_err();
        assert_eq!((e.line, e.col), (2, 9));
        assert!(tokenize("09").is_err());
        assert!(tokenize("a # b").unwrap_err().message.contains('#'));
    }
}
