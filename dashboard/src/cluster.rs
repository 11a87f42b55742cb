//! Topology changes as pure functions: each takes the current topology and returns
//! the next one or says why not. No I/O here, so every rule is tested directly.

use kodis_common::slot::SLOT_COUNT;
use kodis_common::topology::{Group, SlotRange, Topology};

use crate::error::ApiError;

/// Adds an empty group.
pub fn add_group(t: &Topology, id: u32) -> Result<Topology, ApiError> {
    if id == 0 {
        return Err(ApiError::BadRequest("group ids start at 1".into()));
    }
    if t.group(id).is_some() {
        return Err(ApiError::Conflict(format!("group {id} already exists")));
    }
    let mut next = t.clone();
    next.groups.push(Group {
        id,
        servers: Vec::new(),
    });
    next.groups.sort_by_key(|g| g.id);
    Ok(next)
}

/// Removes a group that owns no slots and has no servers.
pub fn remove_group(t: &Topology, id: u32) -> Result<Topology, ApiError> {
    let g = find(t, id)?;
    let owned = slot_count(t, id);
    if owned > 0 {
        return Err(ApiError::Conflict(format!(
            "group {id} owns {owned} slots; move them away first"
        )));
    }
    if !g.servers.is_empty() {
        return Err(ApiError::Conflict(format!(
            "group {id} still has {} server(s); remove them first",
            g.servers.len()
        )));
    }
    let mut next = t.clone();
    next.groups.retain(|g| g.id != id);
    Ok(next)
}

/// Adds a server to a group: the first one becomes master, later ones replicas.
pub fn add_server(t: &Topology, id: u32, addr: &str) -> Result<Topology, ApiError> {
    check_addr(addr)?;
    find(t, id)?;
    if let Some(other) = t
        .groups
        .iter()
        .find(|g| g.servers.iter().any(|s| s == addr))
    {
        return Err(ApiError::Conflict(format!(
            "{addr} is already a server of group {}",
            other.id
        )));
    }
    let mut next = t.clone();
    if let Some(g) = next.groups.iter_mut().find(|g| g.id == id) {
        g.servers.push(addr.to_string());
    }
    Ok(next)
}

/// Removes a server. A master is removable only when it is alone and its group
/// owns no slots.
pub fn remove_server(t: &Topology, id: u32, addr: &str) -> Result<Topology, ApiError> {
    let g = find(t, id)?;
    let Some(pos) = g.servers.iter().position(|s| s == addr) else {
        return Err(ApiError::NotFound(format!(
            "{addr} is not a server of group {id}"
        )));
    };
    if pos == 0 {
        if g.servers.len() > 1 {
            return Err(ApiError::Conflict(format!(
                "{addr} is the master of group {id} and still has replicas; promote one first"
            )));
        }
        let owned = slot_count(t, id);
        if owned > 0 {
            return Err(ApiError::Conflict(format!(
                "{addr} is the master of group {id}, which owns {owned} slots"
            )));
        }
    }
    let mut next = t.clone();
    if let Some(g) = next.groups.iter_mut().find(|g| g.id == id) {
        g.servers.remove(pos);
    }
    Ok(next)
}

/// Makes replica `addr` the master of its group (moved to the front; the others keep
/// their order).
pub fn promote(t: &Topology, id: u32, addr: &str) -> Result<Topology, ApiError> {
    let g = find(t, id)?;
    match g.servers.iter().position(|s| s == addr) {
        None => Err(ApiError::NotFound(format!(
            "{addr} is not a server of group {id}"
        ))),
        Some(0) => Err(ApiError::Conflict(format!(
            "{addr} already is the master of group {id}"
        ))),
        Some(pos) => {
            let mut next = t.clone();
            if let Some(g) = next.groups.iter_mut().find(|g| g.id == id) {
                let s = g.servers.remove(pos);
                g.servers.insert(0, s);
            }
            Ok(next)
        }
    }
}

/// Spreads every unowned slot over the groups that have servers, so that slot
/// counts end as even as the slots already owned allow.
pub fn init_slots(t: &Topology) -> Result<Topology, ApiError> {
    let serving: Vec<u32> = t
        .groups
        .iter()
        .filter(|g| !g.servers.is_empty())
        .map(|g| g.id)
        .collect();
    if serving.is_empty() {
        return Err(ApiError::Conflict(
            "no group has a server yet: add servers before assigning slots".into(),
        ));
    }
    let mut owners = owners(t)?;
    let free: Vec<u16> = (0..SLOT_COUNT)
        .filter(|&s| owners[s as usize].is_none())
        .collect();
    if free.is_empty() {
        return Err(ApiError::Conflict("every slot already has an owner".into()));
    }
    let total = owners.iter().filter(|o| o.is_some()).count() + free.len();
    let mut counts: Vec<usize> = serving.iter().map(|&g| slot_count(t, g) as usize).collect();
    // Fill groups in id order up to an even share, first groups taking the remainder.
    let n = serving.len();
    let mut free = free.into_iter();
    for (i, &g) in serving.iter().enumerate() {
        let target = total / n + usize::from(i < total % n);
        while counts[i] < target {
            let Some(s) = free.next() else { break };
            owners[s as usize] = Some(g);
            counts[i] += 1;
        }
    }
    // Groups already above their share leave a remainder: give it to the last group.
    for s in free {
        owners[s as usize] = serving.last().copied();
    }
    let mut next = t.clone();
    next.slots = ranges(&owners);
    Ok(next)
}

/// Gives unowned slots `from..=to` to `group`.
pub fn assign_slots(t: &Topology, from: u16, to: u16, group: u32) -> Result<Topology, ApiError> {
    if from > to || to >= SLOT_COUNT {
        return Err(ApiError::BadRequest(format!(
            "slots {from}..={to} are not a range within 0..={}",
            SLOT_COUNT - 1
        )));
    }
    let g = find(t, group)?;
    if g.servers.is_empty() {
        return Err(ApiError::Conflict(format!(
            "group {group} has no server to serve slots"
        )));
    }
    let mut owners = owners(t)?;
    if let Some(s) = (from..=to).find(|&s| owners[s as usize].is_some()) {
        return Err(ApiError::Conflict(format!(
            "slot {s} is owned by group {}; moving owned slots is a migration",
            owners[s as usize].unwrap_or_default()
        )));
    }
    for s in from..=to {
        owners[s as usize] = Some(group);
    }
    let mut next = t.clone();
    next.slots = ranges(&owners);
    Ok(next)
}

/// How many slots group `id` owns.
pub fn slot_count(t: &Topology, id: u32) -> u32 {
    t.slots
        .iter()
        .filter(|r| r.group == id)
        .map(|r| u32::from(r.end - r.start) + 1)
        .sum()
}

fn find(t: &Topology, id: u32) -> Result<&Group, ApiError> {
    t.group(id)
        .ok_or_else(|| ApiError::NotFound(format!("no group {id}")))
}

fn owners(t: &Topology) -> Result<Vec<Option<u32>>, ApiError> {
    t.slot_owners()
        .map_err(|e| ApiError::Internal(format!("stored topology is invalid: {e}")))
}

/// Compresses per-slot owners into ranges.
fn ranges(owners: &[Option<u32>]) -> Vec<SlotRange> {
    let mut out: Vec<SlotRange> = Vec::new();
    for (s, o) in owners.iter().enumerate() {
        let Some(g) = *o else { continue };
        let s = s as u16;
        match out.last_mut() {
            Some(r) if r.group == g && r.end + 1 == s => r.end = s,
            _ => out.push(SlotRange {
                start: s,
                end: s,
                group: g,
            }),
        }
    }
    out
}

/// `host:port` with a non-empty host and a numeric port.
fn check_addr(addr: &str) -> Result<(), ApiError> {
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
        _ => Err(ApiError::BadRequest(format!(
            "{addr:?} is not a host:port address"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_groups() -> Topology {
        let t = add_group(&Topology::empty(), 1).expect("add");
        let t = add_group(&t, 2).expect("add");
        let t = add_server(&t, 1, "h:1").expect("server");
        let t = add_server(&t, 1, "h:2").expect("server");
        add_server(&t, 2, "h:3").expect("server")
    }

    #[test]
    fn groups_and_servers() {
        let t = two_groups();
        assert_eq!(t.group(1).and_then(Group::master), Some("h:1"));
        assert!(matches!(add_group(&t, 1), Err(ApiError::Conflict(_))));
        assert!(matches!(add_group(&t, 0), Err(ApiError::BadRequest(_))));
        assert!(matches!(
            add_server(&t, 2, "h:1"),
            Err(ApiError::Conflict(_))
        ));
        assert!(matches!(
            add_server(&t, 9, "h:9"),
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(
            add_server(&t, 2, "nohost"),
            Err(ApiError::BadRequest(_))
        ));
        // A master with replicas cannot go; a replica can.
        assert!(matches!(
            remove_server(&t, 1, "h:1"),
            Err(ApiError::Conflict(_))
        ));
        let t2 = remove_server(&t, 1, "h:2").expect("replica goes");
        assert_eq!(t2.group(1).map(|g| g.servers.len()), Some(1));
        assert!(matches!(remove_group(&t, 2), Err(ApiError::Conflict(_))));
        let p = promote(&t, 1, "h:2").expect("promote");
        assert_eq!(
            p.group(1).map(|g| g.servers.clone()),
            Some(vec!["h:2".into(), "h:1".into()])
        );
        assert!(matches!(promote(&t, 1, "h:1"), Err(ApiError::Conflict(_))));
    }

    #[test]
    fn slots_init_is_even_and_assign_takes_only_free_slots() {
        let t = init_slots(&two_groups()).expect("init");
        t.validate_complete().expect("every slot owned");
        assert_eq!(slot_count(&t, 1), 8192);
        assert_eq!(slot_count(&t, 2), 8192);
        assert!(matches!(init_slots(&t), Err(ApiError::Conflict(_))));
        assert!(matches!(
            assign_slots(&t, 0, 10, 2),
            Err(ApiError::Conflict(_))
        ));
        let partial = assign_slots(&two_groups(), 100, 199, 2).expect("assign");
        assert_eq!(slot_count(&partial, 2), 100);
        let full = init_slots(&partial).expect("init the rest");
        full.validate_complete().expect("complete");
        assert_eq!(slot_count(&full, 1) + slot_count(&full, 2), 16384);
        assert!((slot_count(&full, 1) as i64 - slot_count(&full, 2) as i64).abs() <= 1);
        assert!(matches!(
            assign_slots(&t, 5, 2, 1),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            remove_server(&t, 2, "h:3"),
            Err(ApiError::Conflict(_))
        ));
    }
}
