//! Caption channels and sets of them.

use std::fmt;

/// One caption channel: a CEA-608 channel `Cc(1..=4)` (CC1/CC2 in field 1,
/// CC3/CC4 in field 2) or a CEA-708 service `Service(1..=63)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Cc(u8),
    Service(u8),
}

impl Channel {
    /// The HLS `INSTREAM-ID` / API `instreamId`: `CC1`..`CC4`, `SERVICE1`..`SERVICE63`.
    pub fn instream_id(&self) -> String {
        self.to_string()
    }

    /// Parses an instream id (case-insensitive); `None` when out of range.
    pub fn parse(id: &str) -> Option<Channel> {
        let id = id.trim().to_ascii_uppercase();
        if let Some(n) = id.strip_prefix("CC") {
            let n: u8 = n.parse().ok()?;
            (1..=4).contains(&n).then_some(Channel::Cc(n))
        } else if let Some(n) = id.strip_prefix("SERVICE") {
            let n: u8 = n.parse().ok()?;
            (1..=63).contains(&n).then_some(Channel::Service(n))
        } else {
            None
        }
    }

    fn valid(&self) -> bool {
        match *self {
            Channel::Cc(n) => (1..=4).contains(&n),
            Channel::Service(n) => (1..=63).contains(&n),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Cc(n) => write!(f, "CC{n}"),
            Channel::Service(n) => write!(f, "SERVICE{n}"),
        }
    }
}

/// A set of caption channels (cheap to copy and compare, so ingest can
/// publish it only when it changes). Iterates CC1..CC4 then SERVICE1..63.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ChannelSet {
    /// Bit n-1 = CCn.
    cc: u8,
    /// Bit n = SERVICEn (bit 0 unused).
    services: u64,
}

impl ChannelSet {
    /// The empty set.
    pub const fn new() -> Self {
        ChannelSet { cc: 0, services: 0 }
    }

    /// Adds a channel; out-of-range channels are ignored.
    pub fn insert(&mut self, ch: Channel) {
        if !ch.valid() {
            return;
        }
        match ch {
            Channel::Cc(n) => self.cc |= 1 << (n - 1),
            Channel::Service(n) => self.services |= 1 << n,
        }
    }

    pub fn remove(&mut self, ch: Channel) {
        if !ch.valid() {
            return;
        }
        match ch {
            Channel::Cc(n) => self.cc &= !(1 << (n - 1)),
            Channel::Service(n) => self.services &= !(1 << n),
        }
    }

    pub fn contains(&self, ch: Channel) -> bool {
        ch.valid()
            && match ch {
                Channel::Cc(n) => self.cc & (1 << (n - 1)) != 0,
                Channel::Service(n) => self.services & (1 << n) != 0,
            }
    }

    pub fn is_empty(&self) -> bool {
        self.cc == 0 && self.services == 0
    }

    pub fn len(&self) -> usize {
        (self.cc.count_ones() + self.services.count_ones()) as usize
    }

    /// The present channels, CC1..CC4 first, then SERVICE1..SERVICE63.
    pub fn iter(&self) -> impl Iterator<Item = Channel> + '_ {
        let set = *self;
        (1..=4u8)
            .map(Channel::Cc)
            .chain((1..=63u8).map(Channel::Service))
            .filter(move |c| set.contains(*c))
    }

    /// The 608 channel a WebVTT rendition is decoded from: the lowest
    /// present CCn, if any.
    pub fn subtitle_channel(&self) -> Option<u8> {
        (1..=4u8).find(|n| self.contains(Channel::Cc(*n)))
    }

    /// The channel a WebVTT rendition (and WebRTC's captions) is decoded
    /// from: the lowest present CCn, else the lowest present SERVICEn.
    pub fn subtitle_source(&self) -> Option<Channel> {
        self.subtitle_channel()
            .map(Channel::Cc)
            .or_else(|| (1..=63u8).map(Channel::Service).find(|c| self.contains(*c)))
    }
}

impl FromIterator<Channel> for ChannelSet {
    fn from_iter<T: IntoIterator<Item = Channel>>(iter: T) -> Self {
        let mut set = ChannelSet::new();
        for c in iter {
            set.insert(c);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_and_order() {
        let mut s = ChannelSet::new();
        assert!(s.is_empty());
        s.insert(Channel::Service(63));
        s.insert(Channel::Cc(3));
        s.insert(Channel::Service(1));
        s.insert(Channel::Cc(1));
        s.insert(Channel::Cc(0)); // ignored
        s.insert(Channel::Service(64)); // ignored
        let v: Vec<String> = s.iter().map(|c| c.instream_id()).collect();
        assert_eq!(v, ["CC1", "CC3", "SERVICE1", "SERVICE63"]);
        assert_eq!(s.len(), 4);
        assert_eq!(s.subtitle_channel(), Some(1));
        s.remove(Channel::Cc(1));
        assert_eq!(s.subtitle_channel(), Some(3));
        assert!(!s.contains(Channel::Cc(1)));
    }

    #[test]
    fn parse_ids() {
        assert_eq!(Channel::parse("cc2"), Some(Channel::Cc(2)));
        assert_eq!(Channel::parse("SERVICE12"), Some(Channel::Service(12)));
        assert_eq!(Channel::parse("CC5"), None);
        assert_eq!(Channel::parse("SERVICE0"), None);
        assert_eq!(Channel::parse("SERVICE64"), None);
        assert_eq!(Channel::parse("x"), None);
    }
}
