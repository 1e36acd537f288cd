//! The order in which the master starts and stops its programs: ascending `priority` to
//! start (programs of equal priority together, in the order they are configured), the reverse
//! to stop. Pure: the runtime asks which group comes next and whether a group has settled.

use std::collections::VecDeque;

/// Groups of program indices of equal priority, in start order.
pub(crate) fn start_groups(priorities: &[u32], autostart: &[bool]) -> VecDeque<Vec<usize>> {
    let mut order: Vec<usize> = (0..priorities.len()).filter(|&i| autostart[i]).collect();
    // Stable: equal priorities keep the configured order.
    order.sort_by_key(|&i| priorities[i]);
    let mut groups: VecDeque<Vec<usize>> = VecDeque::new();
    for i in order {
        match groups.back_mut() {
            Some(group) if priorities[group[0]] == priorities[i] => group.push(i),
            _ => groups.push_back(vec![i]),
        }
    }
    groups
}

/// Groups of every program, in stop order: the reverse of the start order (autostart or not).
pub(crate) fn stop_groups(priorities: &[u32]) -> VecDeque<Vec<usize>> {
    let all = vec![true; priorities.len()];
    let mut groups: Vec<Vec<usize>> = start_groups(priorities, &all).into();
    groups.reverse();
    for group in &mut groups {
        group.reverse();
    }
    groups.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_order_is_ascending_priority_with_ties_together_in_configured_order() {
        let groups = start_groups(&[999, 10, 999, 5, 10], &[true; 5]);
        assert_eq!(groups, [vec![3], vec![1, 4], vec![0, 2]]);
    }

    #[test]
    fn programs_without_autostart_are_left_out_of_the_start_order() {
        let groups = start_groups(&[1, 2, 3], &[true, false, true]);
        assert_eq!(groups, [vec![0], vec![2]]);
    }

    #[test]
    fn stop_order_is_the_reverse_and_includes_every_program() {
        let groups = stop_groups(&[999, 10, 999, 5, 10]);
        assert_eq!(groups, [vec![2, 0], vec![4, 1], vec![3]]);
    }
}
