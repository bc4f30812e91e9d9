//! JavaScript regular expressions, the part workflows use, run without backtracking (a Pike
//! VM: every alternative advanced together over the text), so a pattern's cost is linear in
//! the text. Literals, `.`, classes `[a-z]`/`[^...]`, `\d \w \s` and their negations, `\b`,
//! `^`, `$`, groups, `|`, `* + ? {n} {n,} {n,m}` (greedy or lazy alike: only whether it
//! matches is asked), flags `i`, `m`, `s`. Backreferences and lookaround are an error.
//!
//! Written here rather than taken from a crate: the `regex` crate reads another syntax (`[^]`,
//! `[]` and `a{b` mean other things or nothing to it), and `regress`, which reads JavaScript's,
//! backtracks, so a pattern in a workflow could make a task take exponential time.

use super::{MAX_PATTERN_LEN, MAX_PATTERN_WORK};

/// Most instructions a compiled pattern may hold (`a{1000}` is a thousand).
const MAX_PROGRAM: usize = 20_000;

/// Largest count a `{n,m}` may give.
const MAX_REPEAT: u32 = 1000;

/// Deepest nesting of groups.
const MAX_NESTING: usize = 100;

const NOTHING_TO_REPEAT: &str = "a quantifier with nothing to repeat";

pub struct Pattern {
    program: Vec<Inst>,
    classes: Vec<Class>,
    ignore_case: bool,
    multiline: bool,
    dot_all: bool,
    /// The pattern, when it is plain text: found with a substring search.
    literal: Option<String>,
}

#[derive(Clone, Copy)]
enum Inst {
    Char(char),
    Any,
    Class(usize),
    Assert(Assertion),
    Split(usize, usize),
    Jump(usize),
    Match,
}

#[derive(Clone, Copy)]
enum Assertion {
    Start,
    End,
    WordBoundary,
    NotWordBoundary,
}

#[derive(Clone)]
struct Class {
    negated: bool,
    items: Vec<ClassItem>,
}

#[derive(Clone, Copy)]
enum ClassItem {
    Range(char, char),
    Digit(bool),
    Word(bool),
    Space(bool),
}

enum Node {
    Char(char),
    Any,
    Class(Class),
    Assert(Assertion),
    Concat(Vec<Node>),
    Alternation(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

impl Pattern {
    /// `source` compiled with `flags`, or why it cannot be.
    pub fn new(source: &str, flags: &str) -> Result<Pattern, String> {
        let mut ignore_case = false;
        let mut multiline = false;
        let mut dot_all = false;
        for flag in flags.chars() {
            match flag {
                'i' => ignore_case = true,
                'm' => multiline = true,
                's' => dot_all = true,
                'g' | 'y' | 'u' | 'd' => {}
                other => return Err(format!("an unknown flag `{other}`")),
            }
        }
        let chars: Vec<char> = source.chars().collect();
        if chars.len() > MAX_PATTERN_LEN {
            return Err(format!("more than {MAX_PATTERN_LEN} characters"));
        }
        let plain = !chars.iter().any(|c| "\\^$.|?*+()[]{}".contains(*c));
        let literal = (plain && !ignore_case).then(|| source.to_owned());
        let mut parser = Parser {
            chars,
            at: 0,
            nesting: 0,
        };
        let node = parser.alternation()?;
        if parser.at < parser.chars.len() {
            return Err("an unmatched `)`".to_owned());
        }
        let mut compiler = Compiler::default();
        compiler.compile(&node)?;
        compiler.program.push(Inst::Match);
        Ok(Pattern {
            program: compiler.program,
            classes: compiler.classes,
            ignore_case,
            multiline,
            dot_all,
            literal,
        })
    }

    /// Whether the pattern matches somewhere in `text`; an error past [`MAX_PATTERN_WORK`].
    pub fn is_match(&self, text: &str) -> Result<bool, String> {
        self.is_match_within(text, MAX_PATTERN_WORK)
    }

    /// [`Pattern::is_match`], an error past `limit` steps.
    pub(super) fn is_match_within(&self, text: &str, limit: usize) -> Result<bool, String> {
        if let Some(literal) = &self.literal {
            return Ok(text.contains(literal.as_str()));
        }
        let chars: Vec<char> = text.chars().collect();
        let mut current = Threads::new(self.program.len());
        let mut next = Threads::new(self.program.len());
        let mut stack = Vec::new();
        let mut work = Budget { used: 0, limit };
        for at in 0..=chars.len() {
            if self.add(&mut current, 0, at, &chars, &mut stack, &mut work)? {
                return Ok(true);
            }
            let Some(&c) = chars.get(at) else {
                break;
            };
            for index in 0..current.dense.len() {
                let pc = current.dense[index];
                let step = match self.program[pc] {
                    Inst::Char(expected) => self.same(c, expected),
                    Inst::Any => self.dot_all || !line_terminator(c),
                    Inst::Class(class) => self.classes[class].matches(c, self.ignore_case),
                    _ => false,
                };
                if step && self.add(&mut next, pc + 1, at + 1, &chars, &mut stack, &mut work)? {
                    return Ok(true);
                }
            }
            std::mem::swap(&mut current, &mut next);
            next.clear();
        }
        Ok(false)
    }

    /// Adds the thread at `pc` and all it reaches without reading a character; true when
    /// one of them is a match.
    fn add(
        &self,
        threads: &mut Threads,
        pc: usize,
        at: usize,
        chars: &[char],
        stack: &mut Vec<usize>,
        work: &mut Budget,
    ) -> Result<bool, String> {
        stack.clear();
        stack.push(pc);
        while let Some(pc) = stack.pop() {
            if !threads.insert(pc) {
                continue;
            }
            work.used += 1;
            if work.used > work.limit {
                return Err(format!(
                    "takes more than {} steps to match this text",
                    work.limit
                ));
            }
            match self.program[pc] {
                Inst::Match => return Ok(true),
                Inst::Jump(to) => stack.push(to),
                Inst::Split(first, second) => {
                    stack.push(second);
                    stack.push(first);
                }
                Inst::Assert(assertion) => {
                    if self.holds(assertion, at, chars) {
                        stack.push(pc + 1);
                    }
                }
                Inst::Char(_) | Inst::Any | Inst::Class(_) => {}
            }
        }
        Ok(false)
    }

    fn holds(&self, assertion: Assertion, at: usize, chars: &[char]) -> bool {
        let before = at.checked_sub(1).map(|i| chars[i]);
        let after = chars.get(at).copied();
        match assertion {
            Assertion::Start => {
                before.is_none() || (self.multiline && before.is_some_and(line_terminator))
            }
            Assertion::End => {
                after.is_none() || (self.multiline && after.is_some_and(line_terminator))
            }
            Assertion::WordBoundary => before.is_some_and(word) != after.is_some_and(word),
            Assertion::NotWordBoundary => before.is_some_and(word) == after.is_some_and(word),
        }
    }

    fn same(&self, c: char, expected: char) -> bool {
        c == expected || (self.ignore_case && fold(c) == fold(expected))
    }
}

fn line_terminator(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

fn word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn space(c: char) -> bool {
    (c.is_whitespace() && c != '\u{85}') || c == '\u{feff}'
}

fn fold(c: char) -> char {
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(folded), None) => folded,
        _ => c,
    }
}

fn unfold(c: char) -> char {
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(folded), None) => folded,
        _ => c,
    }
}

impl Class {
    fn matches(&self, c: char, ignore_case: bool) -> bool {
        let hit = |c: char| {
            self.items.iter().any(|item| match *item {
                ClassItem::Range(low, high) => (low..=high).contains(&c),
                ClassItem::Digit(negated) => c.is_ascii_digit() != negated,
                ClassItem::Word(negated) => word(c) != negated,
                ClassItem::Space(negated) => space(c) != negated,
            })
        };
        let found = hit(c) || (ignore_case && (hit(fold(c)) || hit(unfold(c))));
        found != self.negated
    }
}

/// Matching steps taken, and how many may be.
struct Budget {
    used: usize,
    limit: usize,
}

/// A set of program counters, cleared in constant time.
struct Threads {
    dense: Vec<usize>,
    sparse: Vec<usize>,
}

impl Threads {
    fn new(size: usize) -> Threads {
        Threads {
            dense: Vec::with_capacity(size),
            sparse: vec![0; size],
        }
    }

    fn insert(&mut self, pc: usize) -> bool {
        let slot = self.sparse[pc];
        if slot < self.dense.len() && self.dense[slot] == pc {
            return false;
        }
        self.sparse[pc] = self.dense.len();
        self.dense.push(pc);
        true
    }

    fn clear(&mut self) {
        self.dense.clear();
    }
}

struct Parser {
    chars: Vec<char>,
    at: usize,
    nesting: usize,
}

/// What an escape stands for.
enum Escape {
    Char(char),
    Item(ClassItem),
    Assert(Assertion),
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn alternation(&mut self) -> Result<Node, String> {
        let mut branches = vec![self.sequence()?];
        while self.eat('|') {
            branches.push(self.sequence()?);
        }
        Ok(if branches.len() == 1 {
            branches.remove(0)
        } else {
            Node::Alternation(branches)
        })
    }

    fn sequence(&mut self) -> Result<Node, String> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.quantified(atom)?);
        }
        Ok(Node::Concat(items))
    }

    fn atom(&mut self) -> Result<Node, String> {
        let Some(c) = self.peek() else {
            return Err("an unexpected end".to_owned());
        };
        self.at += 1;
        Ok(match c {
            '(' => {
                self.nesting += 1;
                if self.nesting > MAX_NESTING {
                    return Err(format!("groups nested deeper than {MAX_NESTING}"));
                }
                if self.peek() == Some('?') {
                    if self.chars.get(self.at + 1) == Some(&':') {
                        self.at += 2;
                    } else {
                        return Err(
                            "lookaround or a named group, which is not supported".to_owned()
                        );
                    }
                }
                let inner = self.alternation()?;
                if !self.eat(')') {
                    return Err("an unterminated group".to_owned());
                }
                self.nesting -= 1;
                inner
            }
            '[' => self.class()?,
            '.' => Node::Any,
            '^' => Node::Assert(Assertion::Start),
            '$' => Node::Assert(Assertion::End),
            '\\' => match self.escape(false)? {
                Escape::Char(c) => Node::Char(c),
                Escape::Item(item) => Node::Class(Class {
                    negated: false,
                    items: vec![item],
                }),
                Escape::Assert(assertion) => Node::Assert(assertion),
            },
            '*' | '+' | '?' => return Err(NOTHING_TO_REPEAT.to_owned()),
            '{' if self.braces().is_some() => return Err(NOTHING_TO_REPEAT.to_owned()),
            c => Node::Char(c),
        })
    }

    /// `{n}`, `{n,}` or `{n,m}` at the current position (after its `{`): (min, max, the
    /// characters it takes after the `{`).
    fn braces(&self) -> Option<(u32, Option<u32>, usize)> {
        let rest: String = self.chars[self.at..].iter().take(24).collect();
        let end = rest.find('}')?;
        let inside = &rest[..end];
        let (min, max) = match inside.split_once(',') {
            None => (inside, Some(inside)),
            Some((min, "")) => (min, None),
            Some((min, max)) => (min, Some(max)),
        };
        let number = |text: &str| -> Option<u32> {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(text.parse::<u32>().unwrap_or(u32::MAX))
        };
        let min = number(min)?;
        let max = match max {
            Some(max) => Some(number(max)?),
            None => None,
        };
        Some((min, max, inside.chars().count() + 1))
    }

    fn quantified(&mut self, atom: Node) -> Result<Node, String> {
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                self.at += 1;
                match self.braces() {
                    Some((min, max, taken)) => {
                        self.at += taken - 1;
                        (min, max)
                    }
                    None => {
                        self.at -= 1;
                        return Ok(atom);
                    }
                }
            }
            _ => return Ok(atom),
        };
        self.at += 1;
        if matches!(atom, Node::Assert(_)) {
            return Err(NOTHING_TO_REPEAT.to_owned());
        }
        if max.is_some_and(|max| max < min) {
            return Err("a {n,m} quantifier with its numbers out of order".to_owned());
        }
        if min > MAX_REPEAT || max.is_some_and(|max| max > MAX_REPEAT) {
            return Err(format!("a repetition count above {MAX_REPEAT}"));
        }
        self.eat('?');
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
        })
    }

    fn class(&mut self) -> Result<Node, String> {
        let negated = self.eat('^');
        let mut items = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err("an unterminated character class".to_owned());
            };
            self.at += 1;
            if c == ']' {
                break;
            }
            let first = if c == '\\' {
                self.escape(true)?
            } else {
                Escape::Char(c)
            };
            let ranged = self.peek() == Some('-')
                && self.chars.get(self.at + 1).is_some_and(|&next| next != ']');
            match first {
                Escape::Char(low) if ranged => {
                    self.at += 1;
                    let Some(c) = self.peek() else {
                        return Err("an unterminated character class".to_owned());
                    };
                    self.at += 1;
                    let last = if c == '\\' {
                        self.escape(true)?
                    } else {
                        Escape::Char(c)
                    };
                    match last {
                        Escape::Char(high) if high < low => {
                            return Err("a range out of order in a character class".to_owned())
                        }
                        Escape::Char(high) => items.push(ClassItem::Range(low, high)),
                        Escape::Item(item) => {
                            items.push(ClassItem::Range(low, low));
                            items.push(ClassItem::Range('-', '-'));
                            items.push(item);
                        }
                        Escape::Assert(_) => {}
                    }
                }
                Escape::Char(c) => items.push(ClassItem::Range(c, c)),
                Escape::Item(item) => items.push(item),
                Escape::Assert(_) => {}
            }
        }
        Ok(Node::Class(Class { negated, items }))
    }

    /// The escape after a `\`; `in_class`: inside `[...]`, where `\b` is a backspace.
    fn escape(&mut self, in_class: bool) -> Result<Escape, String> {
        let Some(c) = self.peek() else {
            return Err("a `\\` at the end".to_owned());
        };
        self.at += 1;
        let hex = |parser: &mut Parser, digits: usize| -> Option<char> {
            let text: String = parser
                .chars
                .get(parser.at..parser.at + digits)?
                .iter()
                .collect();
            let code = u32::from_str_radix(&text, 16).ok()?;
            let c = char::from_u32(code)?;
            parser.at += digits;
            Some(c)
        };
        Ok(match c {
            'd' => Escape::Item(ClassItem::Digit(false)),
            'D' => Escape::Item(ClassItem::Digit(true)),
            'w' => Escape::Item(ClassItem::Word(false)),
            'W' => Escape::Item(ClassItem::Word(true)),
            's' => Escape::Item(ClassItem::Space(false)),
            'S' => Escape::Item(ClassItem::Space(true)),
            'b' if in_class => Escape::Char('\u{8}'),
            'b' => Escape::Assert(Assertion::WordBoundary),
            'B' if !in_class => Escape::Assert(Assertion::NotWordBoundary),
            'n' => Escape::Char('\n'),
            'r' => Escape::Char('\r'),
            't' => Escape::Char('\t'),
            'f' => Escape::Char('\u{c}'),
            'v' => Escape::Char('\u{b}'),
            '0' if !self.peek().is_some_and(|c| c.is_ascii_digit()) => Escape::Char('\0'),
            '0'..='9' => {
                return Err("a backreference or octal escape, which is not supported".to_owned())
            }
            'x' => Escape::Char(hex(self, 2).unwrap_or('x')),
            'u' => Escape::Char(hex(self, 4).unwrap_or('u')),
            'c' => match self.peek() {
                Some(letter) if letter.is_ascii_alphabetic() => {
                    self.at += 1;
                    Escape::Char(char::from(letter as u8 % 32))
                }
                _ => Escape::Char('c'),
            },
            other => Escape::Char(other),
        })
    }
}

#[derive(Default)]
struct Compiler {
    program: Vec<Inst>,
    classes: Vec<Class>,
}

impl Compiler {
    fn compile(&mut self, node: &Node) -> Result<(), String> {
        if self.program.len() > MAX_PROGRAM {
            return Err(format!(
                "more than {MAX_PROGRAM} instructions once compiled"
            ));
        }
        match node {
            Node::Char(c) => self.program.push(Inst::Char(*c)),
            Node::Any => self.program.push(Inst::Any),
            Node::Class(class) => {
                self.classes.push(class.clone());
                self.program.push(Inst::Class(self.classes.len() - 1));
            }
            Node::Assert(assertion) => self.program.push(Inst::Assert(*assertion)),
            Node::Concat(items) => {
                for item in items {
                    self.compile(item)?;
                }
            }
            Node::Alternation(branches) => {
                let mut jumps = Vec::new();
                for (i, branch) in branches.iter().enumerate() {
                    if i + 1 == branches.len() {
                        self.compile(branch)?;
                        break;
                    }
                    let split = self.program.len();
                    self.program.push(Inst::Split(split + 1, 0));
                    self.compile(branch)?;
                    jumps.push(self.program.len());
                    self.program.push(Inst::Jump(0));
                    self.program[split] = Inst::Split(split + 1, self.program.len());
                }
                let end = self.program.len();
                for jump in jumps {
                    self.program[jump] = Inst::Jump(end);
                }
            }
            Node::Repeat { node, min, max } => {
                for _ in 0..*min {
                    self.compile(node)?;
                }
                match max {
                    None => {
                        let split = self.program.len();
                        self.program.push(Inst::Split(split + 1, 0));
                        self.compile(node)?;
                        self.program.push(Inst::Jump(split));
                        self.program[split] = Inst::Split(split + 1, self.program.len());
                    }
                    Some(max) => {
                        let mut splits = Vec::new();
                        for _ in *min..*max {
                            splits.push(self.program.len());
                            self.program.push(Inst::Split(self.program.len() + 1, 0));
                            self.compile(node)?;
                        }
                        let end = self.program.len();
                        for split in splits {
                            self.program[split] = Inst::Split(split + 1, end);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
