//! The known-host table as PCG and RBFS see it ([`HostView`]).

use std::collections::BTreeSet;

use crate::id::PeerId;
use crate::pcg::HostView;
use crate::peers::Table;
use crate::time::Time;

/// A [`HostView`] over a known-host table at one instant: live means `Alive` in the table (a
/// suspect is not live); hosts the table does not track count as live (PCG's own heartbeats then
/// decide); the diversity choice is the table's own ([`Table::most_diverse_beside`]).
#[derive(Debug, Clone, Copy)]
pub struct TableView<'a> {
    table: &'a Table,
    now: Time,
    me: PeerId,
    site: &'a str,
}

impl<'a> TableView<'a> {
    /// The view of `table` at `now` (the table's clock) for the node `me` on `site`.
    pub fn new(table: &'a Table, now: Time, me: PeerId, site: &'a str) -> Self {
        TableView {
            table,
            now,
            me,
            site,
        }
    }
}

impl HostView for TableView<'_> {
    fn live_hosts(&self) -> Vec<PeerId> {
        self.table
            .iter()
            .filter(|h| h.is_alive() && h.record.id != self.me)
            .map(|h| h.record.id)
            .collect()
    }

    fn is_live(&self, id: &PeerId) -> bool {
        self.table.get(id).is_none_or(|h| h.is_alive())
    }

    fn site(&self, id: &PeerId) -> Option<&str> {
        if *id == self.me {
            return Some(self.site);
        }
        self.table.get(id).map(|h| h.record.site.as_str())
    }

    fn most_diverse(&self, k: usize, exclude: &BTreeSet<PeerId>) -> Vec<PeerId> {
        let represented: Vec<&str> = exclude.iter().filter_map(|p| self.site(p)).collect();
        self.table
            .most_diverse_beside(self.now, k, &represented, |h| {
                h.record.id != self.me && !exclude.contains(&h.record.id)
            })
            .into_iter()
            .map(|h| h.record.id)
            .collect()
    }
}
