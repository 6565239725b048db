//! CMAF boxes, built with mp4-atom: the init segment (ftyp + moov) and chunks (moof + mdat).

use crate::media::{Codec, Track};
use bytes::Bytes;
use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor, SLConfig};
use mp4_atom::{
    Audio, Avc1, Avcc, Decode, Dinf, Dref, Encode, FixedPoint, Ftyp, Hdlr, Hvc1, Hvcc, Mdhd, Mdia,
    Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd, Tkhd,
    Traf as TrafBox, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd,
};

/// Sample flags of a sync sample (sample_depends_on = 2).
pub const FLAGS_SYNC: u32 = 0x0200_0000;
/// Sample flags of a non-sync sample (sample_depends_on = 1, sample_is_non_sync_sample).
pub const FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// One sample of a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Ticks.
    pub duration: u32,
    /// Bytes.
    pub size: u32,
    /// Sync sample.
    pub keyframe: bool,
    /// Composition offset (pts - dts), ticks.
    pub cts: i32,
}

/// One track's run in a fragment.
#[derive(Debug, Clone)]
pub struct Traf {
    /// Track ID (index + 1).
    pub track_id: u32,
    /// Decode time of the first sample.
    pub base_dts: u64,
    /// Samples and their data.
    pub samples: Vec<(Sample, Bytes)>,
}

/// Decodes a configuration record (avcC / hvcC body) by giving it its box header back.
fn record<T: Decode>(kind: &[u8; 4], body: &[u8]) -> Result<T, String> {
    let mut buf = Vec::with_capacity(body.len() + 8);
    let size = u32::try_from(body.len() + 8).map_err(|_| "record too large".to_string())?;
    buf.extend_from_slice(&size.to_be_bytes());
    buf.extend_from_slice(kind);
    buf.extend_from_slice(body);
    T::decode(&mut buf.as_slice()).map_err(|e| format!("{}: {e}", String::from_utf8_lossy(kind)))
}

fn sample_entry(t: &Track) -> Result<mp4_atom::Codec, String> {
    let visual = Visual {
        data_reference_index: 1,
        width: t.width,
        height: t.height,
        ..Default::default()
    };
    Ok(match t.codec {
        Codec::H264 => {
            let avcc: Avcc = record(b"avcC", &t.config)?;
            Avc1 {
                visual,
                avcc,
                ..Default::default()
            }
            .into()
        }
        Codec::H265 => {
            let hvcc: Hvcc = record(b"hvcC", &t.config)?;
            Hvc1 {
                visual,
                hvcc,
                ..Default::default()
            }
            .into()
        }
        Codec::Aac => Mp4a {
            audio: Audio {
                data_reference_index: 1,
                channel_count: t.channels,
                sample_size: 16,
                sample_rate: FixedPoint::new(u16::try_from(t.sample_rate).unwrap_or(0), 0),
            },
            esds: mp4_atom::Esds {
                es_desc: EsDescriptor {
                    es_id: 0,
                    sl_config: SLConfig {},
                    dec_config: DecoderConfig {
                        object_type_indication: 0x40,
                        stream_type: 5,
                        up_stream: 0,
                        buffer_size_db: Default::default(),
                        max_bitrate: 0,
                        avg_bitrate: 0,
                        dec_specific: Some(DecoderSpecific {
                            raw: t.config.to_vec(),
                            ..Default::default()
                        }),
                    },
                    ..Default::default()
                },
            },
            btrt: None,
            taic: None,
        }
        .into(),
    })
}

/// ftyp + moov for `tracks` (track IDs 1..=n in order).
pub fn init_segment(tracks: &[Track]) -> Result<Bytes, String> {
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()],
    };
    let mut trex = Vec::new();
    let mut traks = Vec::new();
    for (i, t) in tracks.iter().enumerate() {
        let id = i as u32 + 1;
        let video = t.codec.is_video();
        let mut minf = Minf {
            dinf: Dinf {
                dref: Dref {
                    entries: vec![Url::default().into()],
                },
            },
            stbl: Stbl {
                stsd: Stsd {
                    codecs: vec![sample_entry(t)?],
                },
                stco: Some(Stco::default()),
                ..Default::default()
            },
            ..Default::default()
        };
        if video {
            minf.vmhd = Some(Vmhd::default());
        } else {
            minf.smhd = Some(Smhd::default());
        }
        traks.push(Trak {
            tkhd: Tkhd {
                track_id: id,
                enabled: true,
                in_movie: true,
                alternate_group: u16::from(!video),
                volume: if video { 0u8.into() } else { 1u8.into() },
                width: t.width.into(),
                height: t.height.into(),
                ..Default::default()
            },
            mdia: Mdia {
                mdhd: Mdhd {
                    timescale: t.timescale,
                    language: "und".into(),
                    ..Default::default()
                },
                hdlr: Hdlr {
                    handler: if video {
                        b"vide".into()
                    } else {
                        b"soun".into()
                    },
                    name: if video {
                        "VideoHandler"
                    } else {
                        "SoundHandler"
                    }
                    .into(),
                },
                minf,
            },
            ..Default::default()
        });
        trex.push(Trex {
            track_id: id,
            default_sample_description_index: 1,
            ..Default::default()
        });
    }
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1u16.into(),
            volume: 1u8.into(),
            next_track_id: tracks.len() as u32 + 1,
            ..Default::default()
        },
        mvex: Some(Mvex { mehd: None, trex }),
        trak: traks,
        ..Default::default()
    };
    let mut buf = Vec::with_capacity(1024);
    ftyp.encode(&mut buf).map_err(|e| e.to_string())?;
    moov.encode(&mut buf).map_err(|e| e.to_string())?;
    Ok(Bytes::from(buf))
}

/// One CMAF chunk: moof (one traf per track, each with tfdt and one trun) + mdat.
pub fn fragment(seq: u32, trafs: &[Traf]) -> Bytes {
    let mut moof = Moof {
        mfhd: Mfhd {
            sequence_number: seq,
        },
        traf: Vec::with_capacity(trafs.len()),
    };
    for t in trafs {
        let entries = t
            .samples
            .iter()
            .map(|(s, _)| TrunEntry {
                duration: Some(s.duration),
                size: Some(s.size),
                flags: Some(if s.keyframe {
                    FLAGS_SYNC
                } else {
                    FLAGS_NON_SYNC
                }),
                cts: Some(i64::from(s.cts)),
            })
            .collect();
        moof.traf.push(TrafBox {
            tfhd: Tfhd {
                track_id: t.track_id,
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: t.base_dts,
            }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples: TrunSamples::Explicit(entries),
            }],
            ..Default::default()
        });
    }
    let data_len: usize = trafs
        .iter()
        .flat_map(|t| t.samples.iter())
        .map(|(_, d)| d.len())
        .sum();
    // the data offsets have a fixed width, so a first encoding measures the moof
    let mut out = Vec::with_capacity(data_len + 256 + 64 * trafs.len());
    if moof.encode(&mut out).is_err() {
        return Bytes::new();
    }
    let mut off = out.len() + 8;
    for (b, t) in moof.traf.iter_mut().zip(trafs) {
        b.trun[0].data_offset = Some(i32::try_from(off).unwrap_or(i32::MAX));
        off += t.samples.iter().map(|(_, d)| d.len()).sum::<usize>();
    }
    out.clear();
    if moof.encode(&mut out).is_err() {
        return Bytes::new();
    }
    // mdat header by hand: the samples are copied once, straight into the output
    let size = u32::try_from(data_len + 8).unwrap_or(u32::MAX);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(b"mdat");
    for t in trafs {
        for (_, d) in &t.samples {
            out.extend_from_slice(d);
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::avcc_from_parameter_sets;
    use mp4_atom::{Any, Atom, Header};

    #[test]
    fn init_and_fragment_decode_back() {
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x47, 0xfe, 0xc8];
        let avcc = avcc_from_parameter_sets(&sps, &[&[0x68, 0xce, 0x38, 0x80]]).unwrap();
        let tracks = vec![
            Track::h264(avcc, 640, 360),
            Track::aac(Bytes::from_static(&[0x11, 0x90]), 48_000, 2),
        ];
        let init = init_segment(&tracks).unwrap();
        let mut buf = &init[..];
        let mut kinds = Vec::new();
        while !buf.is_empty() {
            kinds.push(Any::decode(&mut buf).unwrap());
        }
        let Any::Moov(moov) = &kinds[1] else {
            panic!("{kinds:?}")
        };
        assert_eq!(moov.trak.len(), 2);
        assert_eq!(moov.trak[1].mdia.mdhd.timescale, 48_000);

        let s = |k| Sample {
            duration: 3600,
            size: 3,
            keyframe: k,
            cts: 0,
        };
        let frag = fragment(
            7,
            &[
                Traf {
                    track_id: 1,
                    base_dts: 90_000,
                    samples: vec![
                        (s(true), Bytes::from_static(b"abc")),
                        (s(false), Bytes::from_static(b"def")),
                    ],
                },
                Traf {
                    track_id: 2,
                    base_dts: 48_000,
                    samples: vec![(
                        Sample {
                            duration: 1024,
                            size: 2,
                            keyframe: true,
                            cts: 0,
                        },
                        Bytes::from_static(b"xy"),
                    )],
                },
            ],
        );
        let mut buf = &frag[..];
        let Any::Moof(moof) = Any::decode(&mut buf).unwrap() else {
            panic!()
        };
        let moof_len = frag.len() - buf.len();
        assert_eq!(moof.mfhd.sequence_number, 7);
        let off = moof.traf[1].trun[0].data_offset.unwrap() as usize;
        assert_eq!(&frag[off..off + 2], b"xy");
        let off = moof.traf[0].trun[0].data_offset.unwrap() as usize;
        assert_eq!(off, moof_len + 8);
        assert_eq!(&frag[off..off + 6], b"abcdef");
        let h = Header::decode(&mut buf).unwrap();
        assert_eq!(h.kind, mp4_atom::Mdat::KIND);
    }
}
