//! The read planner: turns a poll group's tags into as few requests as the
//! device allows.
//!
//! Invariants (checked by a property test):
//! - every tag is read by exactly one request, which covers all its registers;
//! - no request exceeds the register or bit limit;
//! - a request never spans a run of more than `max_gap` unused addresses.

use outpost_config::modbus::Table;

/// What the planner needs to know of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub table: Table,
    pub address: u16,
    /// Registers, or 1 for a bit.
    pub width: u16,
}

impl Span {
    fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.width)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_registers: u16,
    pub max_bits: u16,
    pub max_gap: u16,
}

impl Limits {
    fn max_len(&self, table: Table) -> u32 {
        u32::from(if table.is_bits() {
            self.max_bits
        } else {
            self.max_registers
        })
        .max(1)
    }
}

/// One read request and the tags (indexes into the planned slice) it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub table: Table,
    pub address: u16,
    pub count: u16,
    pub tags: Vec<usize>,
}

/// Plans the reads for `spans` (the tags of one poll group).
pub fn plan(spans: &[Span], limits: Limits) -> Vec<Read> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i].table, spans[i].address, spans[i].width));
    let mut out: Vec<Read> = Vec::new();
    let mut cur: Option<(Table, u32, u32, Vec<usize>)> = None;
    for i in order {
        let s = spans[i];
        let start = u32::from(s.address);
        if let Some((table, from, to, tags)) = &mut cur {
            let fits = *table == s.table
                && start <= *to + u32::from(limits.max_gap)
                && s.end().max(*to) - *from <= limits.max_len(s.table);
            if fits {
                *to = (*to).max(s.end());
                tags.push(i);
                continue;
            }
            out.push(finish(*table, *from, *to, std::mem::take(tags)));
        }
        cur = Some((s.table, start, s.end(), vec![i]));
    }
    if let Some((table, from, to, tags)) = cur {
        out.push(finish(table, from, to, tags));
    }
    out
}

fn finish(table: Table, from: u32, to: u32, tags: Vec<usize>) -> Read {
    Read {
        table,
        address: u16::try_from(from).unwrap_or(u16::MAX),
        count: u16::try_from(to - from).unwrap_or(u16::MAX),
        tags,
    }
}

/// Splits a request the device refused with "illegal data address": first
/// without bridging gaps, and if it already had none, into one request per
/// tag. Returns `None` for a single-tag request (nothing left to split).
pub fn split(read: &Read, spans: &[Span], limits: Limits) -> Option<Vec<Read>> {
    if read.tags.len() <= 1 {
        return None;
    }
    let sub: Vec<Span> = read.tags.iter().map(|&i| spans[i]).collect();
    let remap = |mut r: Read| {
        r.tags = r.tags.iter().map(|&j| read.tags[j]).collect();
        r
    };
    let tight = plan(
        &sub,
        Limits {
            max_gap: 0,
            ..limits
        },
    );
    if tight.len() > 1 {
        return Some(tight.into_iter().map(remap).collect());
    }
    Some(
        read.tags
            .iter()
            .map(|&i| Read {
                table: spans[i].table,
                address: spans[i].address,
                count: spans[i].width,
                tags: vec![i],
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn table() -> impl Strategy<Value = Table> {
        prop_oneof![
            Just(Table::Coil),
            Just(Table::Discrete),
            Just(Table::Input),
            Just(Table::Holding)
        ]
    }

    fn span() -> impl Strategy<Value = Span> {
        (
            table(),
            0u16..400,
            prop_oneof![Just(1u16), Just(2), Just(4), 1u16..12],
        )
            .prop_map(|(table, address, width)| Span {
                table,
                address,
                width: if table.is_bits() { 1 } else { width },
            })
    }

    /// The reads cover exactly the tags in `expected`, once each, within the
    /// limits and without gaps over `max_gap`.
    fn check(
        spans: &[Span],
        expected: &[usize],
        reads: &[Read],
        limits: Limits,
    ) -> Result<(), TestCaseError> {
        let mut seen = vec![0u32; spans.len()];
        for r in reads {
            let end = u32::from(r.address) + u32::from(r.count);
            prop_assert!(
                u32::from(r.count) <= limits.max_len(r.table),
                "{r:?} over the limit"
            );
            prop_assert!(r.count > 0);
            // Used addresses inside the request.
            let mut used: Vec<(u32, u32)> = Vec::new();
            for &i in &r.tags {
                let s = spans[i];
                seen[i] += 1;
                prop_assert_eq!(s.table, r.table);
                prop_assert!(
                    u32::from(s.address) >= u32::from(r.address) && s.end() <= end,
                    "{s:?} not inside {r:?}"
                );
                used.push((u32::from(s.address), s.end()));
            }
            used.sort_unstable();
            let mut covered = u32::from(r.address);
            for (a, b) in used {
                prop_assert!(
                    a <= covered + u32::from(limits.max_gap),
                    "gap before {a} in {r:?} exceeds {}",
                    limits.max_gap
                );
                covered = covered.max(b);
            }
            prop_assert_eq!(covered, end, "request {:?} reads past its last tag", r);
        }
        for (i, n) in seen.iter().enumerate() {
            let want = u32::from(expected.contains(&i));
            prop_assert_eq!(*n, want, "tag {} read {} times", i, n);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn every_tag_once_within_limits_and_gaps(
            spans in prop::collection::vec(span(), 0..60),
            max_registers in 4u16..=125,
            max_bits in 1u16..=2000,
            max_gap in 0u16..20,
        ) {
            let limits = Limits { max_registers, max_bits, max_gap };
            // Configuration validation guarantees a tag fits one request.
            let spans: Vec<Span> = spans.into_iter().map(|s| Span { width: s.width.min(max_registers), ..s }).collect();
            let reads = plan(&spans, limits);
            let all: Vec<usize> = (0..spans.len()).collect();
            check(&spans, &all, &reads, limits)?;
            for r in &reads {
                match split(r, &spans, limits) {
                    Some(parts) => {
                        prop_assert!(parts.len() > 1, "a split makes progress");
                        check(&spans, &r.tags, &parts, limits)?;
                    }
                    None => prop_assert_eq!(r.tags.len(), 1),
                }
            }
        }
    }

    #[test]
    fn adjacent_and_near_tags_merge() {
        let s = |a, w| Span {
            table: Table::Holding,
            address: a,
            width: w,
        };
        let spans = [s(0, 2), s(2, 2), s(10, 1), s(30, 4)];
        let limits = Limits {
            max_registers: 125,
            max_bits: 2000,
            max_gap: 8,
        };
        let reads = plan(&spans, limits);
        assert_eq!(reads.len(), 2);
        assert_eq!(
            (reads[0].address, reads[0].count, reads[0].tags.clone()),
            (0, 11, vec![0, 1, 2])
        );
        assert_eq!((reads[1].address, reads[1].count), (30, 4));
        let tight = split(&reads[0], &spans, limits).unwrap();
        assert_eq!(
            tight
                .iter()
                .map(|r| (r.address, r.count))
                .collect::<Vec<_>>(),
            vec![(0, 4), (10, 1)]
        );
        let singles = split(&tight[0], &spans, limits).unwrap();
        assert_eq!(
            singles
                .iter()
                .map(|r| (r.address, r.count))
                .collect::<Vec<_>>(),
            vec![(0, 2), (2, 2)]
        );
        assert!(split(&singles[0], &spans, limits).is_none());
    }

    #[test]
    fn the_register_limit_splits_long_runs() {
        let spans: Vec<Span> = (0..300)
            .map(|a| Span {
                table: Table::Input,
                address: a,
                width: 1,
            })
            .collect();
        let reads = plan(
            &spans,
            Limits {
                max_registers: 125,
                max_bits: 2000,
                max_gap: 0,
            },
        );
        assert_eq!(
            reads.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![125, 125, 50]
        );
    }
}
