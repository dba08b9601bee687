//! From H.264 access units to `cc_data` triplets, and which channels are present.

use bytes::Bytes;
use cea608_types::tables::{Code as Code608, Control, Field};
use cea608_types::Id;
use h264_reader::nal::{NalHeader, UnitType};

use crate::{CaptionError, Channel, ChannelSet};

/// A channel that has not been seen for this long (90 kHz ticks: 60 s) is no
/// longer present.
pub const CHANNEL_TIMEOUT: i64 = 60 * 90_000;

/// SEI NAL units larger than this are not decoded (a `GA94` SEI is a few
/// dozen bytes; this bounds the scratch buffer).
const MAX_SEI_NAL: usize = 16 * 1024;
/// At most this many triplets are returned per access unit (A/53 allows 31
/// per `cc_data`; a few SEI messages per picture are tolerated).
const MAX_TRIPLETS_PER_AU: usize = 4 * 31;
/// A CEA-708 DTVCC packet is at most 128 bytes.
const MAX_DTVCC: usize = 128;

/// Counters of one extractor (the same events also go to `metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractorStats {
    /// Access units scanned.
    pub access_units: u64,
    /// Access units that carried at least one valid triplet.
    pub caption_units: u64,
    /// Errors by kind (see [`CaptionError::kind`]).
    pub nal_length: u64,
    pub sei: u64,
    pub too_large: u64,
    pub cc_count: u64,
    pub parity: u64,
    pub dtvcc: u64,
}

impl ExtractorStats {
    /// Total errors of every kind.
    pub fn errors(&self) -> u64 {
        self.nal_length + self.sei + self.too_large + self.cc_count + self.parity + self.dtvcc
    }
}

/// Finds ATSC A/53 captions in H.264 access units, one per published stream.
///
/// The input is only read. The returned [`Bytes`] holds the valid triplets
/// (`cc_valid` set) in the order found, 3 bytes each
/// (`marker|cc_valid|cc_type`, `cc_data_1`, `cc_data_2`); 608 pairs with bad
/// parity are left out. Push access units in decode order; the presence
/// clock is the `pts` given.
#[derive(Debug)]
pub struct Extractor {
    now: Option<i64>,
    /// Last pts each of CC1..CC4 was seen.
    cc_seen: [Option<i64>; 4],
    /// Last pts each SERVICE0..63 was seen (index 0 unused).
    service_seen: [Option<i64>; 64],
    /// A DTVCC packet being assembled, and its announced size.
    dtvcc: Vec<u8>,
    dtvcc_size: usize,
    stats: ExtractorStats,
}

impl Default for Extractor {
    fn default() -> Self {
        Extractor {
            now: None,
            cc_seen: [None; 4],
            service_seen: [None; 64],
            dtvcc: Vec::with_capacity(MAX_DTVCC),
            dtvcc_size: 0,
            stats: ExtractorStats::default(),
        }
    }
}

impl Extractor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans one access unit in AVCC form (4-byte big-endian NAL lengths, as
    /// in RTMP/FLV and in Banyan's video frames). `pts` in 90 kHz ticks.
    pub fn push_avcc(&mut self, pts: i64, au: &[u8]) -> Option<Bytes> {
        self.begin(pts);
        let mut out = Vec::new();
        let mut rest = au;
        while rest.len() >= 4 {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            rest = &rest[4..];
            if len > rest.len() {
                self.error(CaptionError::NalLength {
                    len,
                    left: rest.len(),
                });
                break;
            }
            let (nal, tail) = rest.split_at(len);
            rest = tail;
            self.nal(nal, &mut out);
        }
        self.finish(out)
    }

    /// Scans one access unit in Annex B form (start codes `00 00 01` or
    /// `00 00 00 01`). `pts` in 90 kHz ticks.
    pub fn push_annexb(&mut self, pts: i64, au: &[u8]) -> Option<Bytes> {
        self.begin(pts);
        let mut out = Vec::new();
        for nal in annexb_nals(au) {
            self.nal(nal, &mut out);
        }
        self.finish(out)
    }

    /// Reads one `cc_data()` structure (starting at the
    /// `process_em_data_flag|process_cc_data_flag|additional_data_flag|cc_count`
    /// byte), as carried by other containers. `pts` in 90 kHz ticks.
    pub fn push_cc_data(&mut self, pts: i64, cc_data: &[u8]) -> Option<Bytes> {
        self.begin(pts);
        let mut out = Vec::new();
        self.cc_data(cc_data, &mut out);
        self.finish(out)
    }

    /// The channels seen within the last [`CHANNEL_TIMEOUT`] of the newest pts.
    pub fn channels(&self) -> ChannelSet {
        let Some(now) = self.now else {
            return ChannelSet::new();
        };
        let fresh =
            |seen: Option<i64>| seen.is_some_and(|t| now.saturating_sub(t) <= CHANNEL_TIMEOUT);
        let mut set = ChannelSet::new();
        for (i, seen) in self.cc_seen.iter().enumerate() {
            if fresh(*seen) {
                set.insert(Channel::Cc(i as u8 + 1));
            }
        }
        for (i, seen) in self.service_seen.iter().enumerate().skip(1) {
            if fresh(*seen) {
                set.insert(Channel::Service(i as u8));
            }
        }
        set
    }

    pub fn stats(&self) -> ExtractorStats {
        self.stats
    }

    fn begin(&mut self, pts: i64) {
        self.stats.access_units += 1;
        // A clock that jumps backwards (a publisher's timestamps reset)
        // restarts presence tracking from the new time.
        if let Some(now) = self.now {
            if pts < now.saturating_sub(CHANNEL_TIMEOUT) {
                self.cc_seen = [None; 4];
                self.service_seen = [None; 64];
            }
        }
        self.now = Some(pts);
    }

    fn finish(&mut self, out: Vec<u8>) -> Option<Bytes> {
        if out.is_empty() {
            return None;
        }
        self.stats.caption_units += 1;
        Some(Bytes::from(out))
    }

    fn error(&mut self, e: CaptionError) {
        match e {
            CaptionError::NalLength { .. } => self.stats.nal_length += 1,
            CaptionError::Sei => self.stats.sei += 1,
            CaptionError::TooLarge(_) => self.stats.too_large += 1,
            CaptionError::CcCount { .. } => self.stats.cc_count += 1,
            CaptionError::Parity => self.stats.parity += 1,
            CaptionError::Dtvcc => self.stats.dtvcc += 1,
        }
        metrics::counter!("banyan_caption_errors_total", "kind" => e.kind()).increment(1);
        tracing::trace!(error = %e, "caption data dropped");
    }

    fn nal(&mut self, nal: &[u8], out: &mut Vec<u8>) {
        let Some(&first) = nal.first() else { return };
        let Ok(header) = NalHeader::new(first) else {
            return;
        };
        if header.nal_unit_type() != UnitType::SEI {
            return;
        }
        if nal.len() > MAX_SEI_NAL {
            self.error(CaptionError::TooLarge(nal.len()));
            return;
        }
        let rbsp = match h264_reader::rbsp::decode_nal(nal) {
            Ok(r) => r,
            Err(_) => {
                self.error(CaptionError::Sei);
                return;
            }
        };
        self.sei(&rbsp, out);
    }

    /// Walks the `sei_message()`s of one SEI RBSP (header byte removed).
    fn sei(&mut self, mut rbsp: &[u8], out: &mut Vec<u8>) {
        loop {
            // Done at the rbsp_trailing_bits (0x80, then zero bytes) or the end.
            match rbsp.split_first() {
                None => return,
                Some((0x80, tail)) if tail.iter().all(|b| *b == 0) => return,
                _ => {}
            }
            let (Some(payload_type), Some(size)) = (sei_number(&mut rbsp), sei_number(&mut rbsp))
            else {
                self.error(CaptionError::Sei);
                return;
            };
            if size > rbsp.len() {
                self.error(CaptionError::Sei);
                return;
            }
            let (payload, tail) = rbsp.split_at(size);
            rbsp = tail;
            // 4 = user_data_registered_itu_t_t35
            if payload_type == 4 {
                if let Some(cc) = ga94_cc_data(payload) {
                    self.cc_data(cc, out);
                }
            }
        }
    }

    fn cc_data(&mut self, cc: &[u8], out: &mut Vec<u8>) {
        if cc.len() < 2 {
            self.error(CaptionError::CcCount {
                cc_count: 0,
                expected: 2,
                actual: cc.len(),
            });
            return;
        }
        let process_cc_data = cc[0] & 0x40 != 0;
        let cc_count = cc[0] & 0x1f;
        let expected = 2 + 3 * cc_count as usize;
        if cc.len() < expected {
            self.error(CaptionError::CcCount {
                cc_count,
                expected,
                actual: cc.len(),
            });
            return;
        }
        if !process_cc_data {
            return;
        }
        let now = self.now.unwrap_or(0);
        for t in cc[2..expected].chunks_exact(3) {
            let valid = t[0] & 0x04 != 0;
            let cc_type = t[0] & 0x03;
            if !valid {
                continue;
            }
            match cc_type {
                0 | 1 => {
                    let field = if cc_type == 0 { Field::ONE } else { Field::TWO };
                    match Code608::from_data([t[1], t[2]]) {
                        Err(_) => {
                            self.error(CaptionError::Parity);
                            continue;
                        }
                        Ok([Code608::Control(c), _]) => {
                            if !matches!(
                                c.code(),
                                Control::Unknown(_)
                                    | Control::TextRestart
                                    | Control::ResumeTextDisplay
                            ) {
                                let id = Id::from_caption_field_channel(field, c.channel());
                                let n = cc_number(id);
                                self.cc_seen[n as usize - 1] = Some(now);
                            }
                        }
                        Ok(_) => {}
                    }
                }
                3 => self.dtvcc_start(t[1], t[2]),
                _ => self.dtvcc_data(t[1], t[2]),
            }
            if out.len() < MAX_TRIPLETS_PER_AU * 3 {
                out.extend_from_slice(t);
            }
        }
    }

    fn dtvcc_start(&mut self, header: u8, first: u8) {
        if !self.dtvcc.is_empty() {
            // The previous packet never reached its announced size.
            self.error(CaptionError::Dtvcc);
        }
        let code = (header & 0x3f) as usize;
        self.dtvcc_size = if code == 0 { MAX_DTVCC } else { code * 2 };
        self.dtvcc.clear();
        self.dtvcc.extend_from_slice(&[header, first]);
        self.dtvcc_check();
    }

    fn dtvcc_data(&mut self, a: u8, b: u8) {
        if self.dtvcc.is_empty() {
            // Joined in the middle of a packet: nothing to assemble.
            return;
        }
        self.dtvcc.extend_from_slice(&[a, b]);
        self.dtvcc_check();
    }

    fn dtvcc_check(&mut self) {
        if self.dtvcc.len() < self.dtvcc_size {
            return;
        }
        let packet = std::mem::take(&mut self.dtvcc);
        match cea708_types::DTVCCPacket::parse(&packet[..self.dtvcc_size]) {
            Ok(p) => {
                let now = self.now.unwrap_or(0);
                for s in p.services() {
                    let n = s.number() as usize;
                    if (1..64).contains(&n) && !s.codes().is_empty() {
                        self.service_seen[n] = Some(now);
                    }
                }
            }
            Err(_) => self.error(CaptionError::Dtvcc),
        }
        // Reuse the allocation.
        self.dtvcc = packet;
        self.dtvcc.clear();
    }
}

pub(crate) fn cc_number(id: Id) -> u8 {
    match id {
        Id::CC1 => 1,
        Id::CC2 => 2,
        Id::CC3 => 3,
        Id::CC4 => 4,
    }
}

/// Reads an SEI payload type or size (a run of 0xFF bytes adds 255 each).
fn sei_number(buf: &mut &[u8]) -> Option<usize> {
    let mut n = 0usize;
    loop {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        n = n.checked_add(b as usize)?;
        if b != 0xff {
            return Some(n);
        }
    }
}

/// The `cc_data()` inside an ATSC A/53 `user_data_registered_itu_t_t35`
/// payload: country 0xB5 (USA), provider 0x0031 (ATSC), `GA94`,
/// `user_data_type_code` 3. Other T.35 payloads are not captions: `None`.
fn ga94_cc_data(p: &[u8]) -> Option<&[u8]> {
    match p {
        [0xb5, 0x00, 0x31, b'G', b'A', b'9', b'4', 0x03, cc @ ..] => Some(cc),
        _ => None,
    }
}

/// The NAL units of an Annex B byte stream (start codes and trailing zero
/// bytes removed).
pub(crate) fn annexb_nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = find_start_code(data, 0).map(|(_, end)| end);
    std::iter::from_fn(move || {
        let start = pos?;
        let (nal_end, next) = match find_start_code(data, start) {
            Some((sc, end)) => (sc, Some(end)),
            None => (data.len(), None),
        };
        pos = next;
        let mut nal = &data[start..nal_end];
        while let [head @ .., 0] = nal {
            nal = head;
        }
        Some(nal)
    })
}

/// Finds the next `00 00 01` at or after `from`: (its index, index after it).
fn find_start_code(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 3 <= data.len() {
        if data[i + 2] > 1 {
            i += 3;
        } else if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            return Some((i, i + 3));
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::{cc_data_bytes, sei_nal};

    fn avcc(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&(n.len() as u32).to_be_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(n);
        }
        v
    }

    const SLICE: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33, 0xff];

    // EOC on CC1 (field 1) and RCL on CC3 (field 2), with parity.
    fn sample_triplets() -> Vec<u8> {
        vec![0xfc, 0x94, 0x2f, 0xfd, 0x15, 0x20]
    }

    #[test]
    fn finds_cc1_and_cc3_in_avcc_and_annexb() {
        let sei = sei_nal(&cc_data_bytes(&sample_triplets(), 2));
        let au = avcc(&[&[0x09, 0xf0], &sei, SLICE]);
        let before = au.clone();
        let mut x = Extractor::new();
        let got = x.push_avcc(0, &au).expect("captions");
        assert_eq!(&got[..], &sample_triplets()[..]);
        assert_eq!(au, before, "input untouched");
        let set: Vec<_> = x.channels().iter().collect();
        assert_eq!(set, [Channel::Cc(1), Channel::Cc(3)]);

        let mut y = Extractor::new();
        let au = annexb(&[&[0x09, 0xf0], &sei, SLICE]);
        assert_eq!(&y.push_annexb(0, &au).unwrap()[..], &sample_triplets()[..]);
        assert_eq!(y.channels(), x.channels());
        assert_eq!(y.stats().errors(), 0);
    }

    #[test]
    fn no_captions_gives_none() {
        let mut x = Extractor::new();
        assert_eq!(x.push_avcc(0, &avcc(&[SLICE])), None);
        // a non-GA94 T.35 SEI (country 0xB5, provider 0x002F)
        let sei = [0x06, 0x04, 0x05, 0xb5, 0x00, 0x2f, 0x03, 0x00, 0x80];
        assert_eq!(x.push_avcc(0, &avcc(&[&sei, SLICE])), None);
        assert!(x.channels().is_empty());
        assert_eq!(x.stats().errors(), 0);
    }

    #[test]
    fn padding_does_not_make_a_channel_present() {
        let pad = [0xfc, 0x80, 0x80, 0xfd, 0x80, 0x80, 0xfa, 0x00, 0x00];
        let mut x = Extractor::new();
        let got = x.push_avcc(0, &avcc(&[&sei_nal(&cc_data_bytes(&pad, 3)), SLICE]));
        assert_eq!(got.as_deref(), Some(&pad[..6]));
        assert!(x.channels().is_empty());
    }

    #[test]
    fn emulation_prevention_is_removed() {
        // cc_data with 00 00 inside needs an emulation prevention byte.
        let trip = [0xfc, 0x94, 0x2c, 0xfa, 0x00, 0x00, 0x01, 0x00, 0x00];
        let sei = sei_nal(&cc_data_bytes(&trip, 3));
        assert!(sei.windows(4).any(|w| w == [0, 0, 3, 1]));
        let mut x = Extractor::new();
        let got = x.push_avcc(0, &avcc(&[&sei])).unwrap();
        assert_eq!(&got[..], &trip[..3]);
        assert_eq!(x.stats().errors(), 0);
    }

    #[test]
    fn bad_input_is_dropped_and_counted() {
        let mut x = Extractor::new();
        // lying NAL length
        let mut au = avcc(&[SLICE]);
        au[3] = 200;
        assert_eq!(x.push_avcc(0, &au), None);
        assert_eq!(x.stats().nal_length, 1);
        // SEI payload size past the NAL
        let sei = [0x06, 0x04, 0x40, 0xb5, 0x00, 0x31];
        assert_eq!(x.push_avcc(0, &avcc(&[&sei])), None);
        assert_eq!(x.stats().sei, 1);
        // cc_count larger than the data
        let mut cc = cc_data_bytes(&sample_triplets(), 2);
        cc[0] = 0xc0 | 5;
        assert_eq!(x.push_avcc(0, &avcc(&[&sei_nal(&cc)])), None);
        assert_eq!(x.stats().cc_count, 1);
        // bad parity: the bad pair goes, the good one stays
        let trip = [0xfc, 0x14, 0x2f, 0xfd, 0x15, 0x20];
        let got = x.push_avcc(0, &avcc(&[&sei_nal(&cc_data_bytes(&trip, 2))]));
        assert_eq!(got.as_deref(), Some(&trip[3..]));
        assert_eq!(x.stats().parity, 1);
        assert_eq!(x.channels().iter().collect::<Vec<_>>(), [Channel::Cc(3)]);
        // a 708 packet announcing 4 bytes whose service block says 5
        let trip = [0xff, 0x02, 0x25, 0xfe, 0x41, 0x42];
        x.push_avcc(0, &avcc(&[&sei_nal(&cc_data_bytes(&trip, 2))]));
        assert_eq!(x.stats().dtvcc, 1);
        // a 708 packet cut short by the next start
        let trip = [0xff, 0x04, 0x21, 0xff, 0x02, 0x21, 0xfe, 0x41, 0x00];
        x.push_avcc(0, &avcc(&[&sei_nal(&cc_data_bytes(&trip, 3))]));
        assert_eq!(x.stats().dtvcc, 2);
        // ... while the complete packet after it counts
        assert!(x.channels().contains(Channel::Service(1)));
    }

    #[test]
    fn service_presence_and_timeout() {
        // DTVCC packet: header (size code 2 = 4 bytes), service 1 block of 1 byte 'A', pad.
        let trip = [0xff, 0x02, 0x21, 0xfe, 0x41, 0x00];
        let sei = sei_nal(&cc_data_bytes(&trip, 2));
        let mut x = Extractor::new();
        x.push_avcc(1000, &avcc(&[&sei])).unwrap();
        assert_eq!(
            x.channels().iter().collect::<Vec<_>>(),
            [Channel::Service(1)]
        );
        x.push_avcc(1000 + CHANNEL_TIMEOUT, &avcc(&[SLICE]));
        assert!(x.channels().contains(Channel::Service(1)));
        x.push_avcc(1001 + CHANNEL_TIMEOUT, &avcc(&[SLICE]));
        assert!(x.channels().is_empty());
    }

    #[test]
    fn pairs_split_over_frames_assemble() {
        let mut x = Extractor::new();
        // 6-byte packet over two access units
        let a = [0xff, 0x03, 0x24, 0xfe, 0x48, 0x49];
        let b = [0xfe, 0x4a, 0x4b];
        x.push_avcc(0, &avcc(&[&sei_nal(&cc_data_bytes(&a, 2))]));
        assert!(x.channels().is_empty());
        x.push_avcc(3000, &avcc(&[&sei_nal(&cc_data_bytes(&b, 1))]));
        assert_eq!(
            x.channels().iter().collect::<Vec<_>>(),
            [Channel::Service(1)]
        );
        assert_eq!(x.stats().errors(), 0);
    }

    #[test]
    fn annexb_splitting() {
        let data = [
            0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 0,
        ];
        let v: Vec<&[u8]> = annexb_nals(&data).collect();
        assert_eq!(v, [&[0x09, 0xf0][..], &[0x67, 1, 2], &[0x68]]);
        assert_eq!(annexb_nals(&[1, 2, 3]).count(), 0);
        assert_eq!(annexb_nals(&[]).count(), 0);
    }
}
