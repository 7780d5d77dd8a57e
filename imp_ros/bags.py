"""Read and write ROS 1 ``.bag`` and ROS 2 bags (sqlite3, mcap) with rosbags, as rclpy messages.

ROS 2 bags hand their raw CDR bytes straight to ``rclpy.serialization``; ROS 1 messages are converted field by
field into the ROS 2 typestore (names such as CameraInfo ``K`` -> ``k``; ``Header.seq`` is dropped).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

STORAGES = ("mcap", "sqlite3", "ros1")
_NUMPY = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8, "int16": np.int16,
    "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
    "float32": np.float32, "float64": np.float64,
}


class BagError(RuntimeError):
    """A bag that cannot be opened or read (the message names the file)."""


def _stores():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED), get_typestore(Stores.ROS1_NOETIC)


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy class."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def _field(obj, name: str):
    for n in (name, name.upper(), name.lower()):
        if hasattr(obj, n):
            return getattr(obj, n)
    return None


def convert(obj, msgtype: str, dst):
    """Copy a rosbags message object into typestore ``dst``'s class of the same type, matching fields by name."""
    from rosbags.typesys.store import Nodetype

    kwargs = {}
    for name, (nt, spec) in dst.fielddefs[msgtype][1]:
        val = _field(obj, name)
        if nt == Nodetype.NAME:
            kwargs[name] = convert(val, spec, dst)
        elif nt == Nodetype.BASE:
            base = spec[0]
            kwargs[name] = val if val is not None else ("" if base == "string" else (False if base == "bool" else 0))
        else:
            (ent, espec), _ = spec
            val = [] if val is None else val
            if ent == Nodetype.NAME:
                kwargs[name] = [convert(v, espec, dst) for v in val]
            elif espec[0] in _NUMPY:
                kwargs[name] = np.asarray(val, dtype=_NUMPY[espec[0]])
            else:
                kwargs[name] = list(val)
    return dst.types[msgtype](**kwargs)


def _header_ns(msg) -> Optional[int]:
    h = getattr(msg, "header", None)
    if h is None:
        return None
    ns = int(h.stamp.sec) * 1_000_000_000 + int(h.stamp.nanosec)
    return ns or None


# ---------------------------------------------------------------- salvaging truncated mcap files
_MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x03, 0x04, 0x05, 0x06


def _mcap_files(path: Path) -> List[Path]:
    if path.is_file():
        return [path] if path.suffix == ".mcap" else []
    return sorted(path.glob("*.mcap")) if path.is_dir() else []


class _Buf:
    """Little-endian field reader over bytes; raises EOFError at a truncated field."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise EOFError
        out = self.data[self.pos: self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def string(self) -> str:
        return self.take(self.uint(4)).decode("utf-8", "replace")


def _partial_decompress(data: bytes, compression: str) -> bytes:
    """As much of a (possibly cut) compressed chunk as decompresses."""
    if compression == "":
        return data
    try:
        if compression == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        if compression == "lz4":
            import lz4.frame

            return lz4.frame.LZ4FrameDecompressor().decompress(data)
    except Exception:  # a cut frame decompresses as far as it goes, or not at all
        return b""
    return b""


def _mcap_records(data: bytes, pos: int, state: dict) -> Iterator[Tuple[int, "_Buf"]]:
    """(opcode, content) of the complete records from ``pos``; records inside chunks are expanded, also from a
    chunk cut by the truncation. Sets state['truncated'] when the data ends inside a record."""
    while pos < len(data):
        if pos + 9 > len(data):
            state["truncated"] = True
            return
        op = data[pos]
        length = int.from_bytes(data[pos + 1: pos + 9], "little")
        body_start, body_end = pos + 9, pos + 9 + length
        complete = body_end <= len(data)
        if op == _OP_CHUNK:
            b = _Buf(data[body_start: min(body_end, len(data))])
            try:
                b.take(8 + 8 + 8 + 4)  # message start/end time, uncompressed size, crc
                compression = b.string()
                n = b.uint(8)
                inner = _partial_decompress(b.data[b.pos: b.pos + n], compression)
            except EOFError:
                inner = b""
            sub: dict = {}
            yield from _mcap_records(inner, 0, sub)
        elif complete:
            yield op, _Buf(data[body_start:body_end])
        if not complete:
            state["truncated"] = True
            return
        pos = body_end


def salvage_mcap(path, topics: Optional[Iterable[str]] = None
                 ) -> Tuple[Dict[str, str], List[Tuple[str, int, str, bytes]]]:
    """Read the intact part of (possibly truncated) mcap files without their summary section: ({topic: msgtype},
    [(topic, log_time_ns, msgtype, cdr bytes)]) in file order. Raises BagError when nothing is readable."""
    path = Path(path)
    files = _mcap_files(path)
    if not files:
        raise BagError(f"bag {path}: no .mcap file to salvage")
    want = None if topics is None else set(topics)
    types: Dict[str, str] = {}
    out: List[Tuple[str, int, str, bytes]] = []
    for f in files:
        data = f.read_bytes()
        if not data.startswith(_MCAP_MAGIC):
            raise BagError(f"bag {f} is not an mcap file (bad magic)")
        schemas: Dict[int, str] = {}
        channels: Dict[int, Tuple[str, str, str]] = {}  # id -> topic, msgtype, encoding
        for op, b in _mcap_records(data, len(_MCAP_MAGIC), {}):
            try:
                if op == _OP_SCHEMA:
                    sid = b.uint(2)
                    schemas[sid] = b.string()
                elif op == _OP_CHANNEL:
                    cid, sid = b.uint(2), b.uint(2)
                    topic, enc = b.string(), b.string()
                    channels[cid] = (topic, schemas.get(sid, ""), enc)
                    if schemas.get(sid):
                        types.setdefault(topic, schemas[sid])
                elif op == _OP_MESSAGE:
                    cid = b.uint(2)
                    b.take(4)  # sequence
                    log_time = b.uint(8)
                    b.take(8)  # publish time
                    ch = channels.get(cid)
                    if ch is None or ch[2] != "cdr" or not ch[1] or (want is not None and ch[0] not in want):
                        continue
                    out.append((ch[0], log_time, ch[1], b.data[b.pos:]))
            except EOFError:
                continue
    if not types:
        raise BagError(f"bag {path}: no readable channel in the mcap data")
    return types, out


def _has_mcap(path: Path) -> bool:
    return bool(_mcap_files(path))


def _warn(warn, text: str) -> None:
    import logging

    (warn or logging.getLogger(__name__).warning)(text)


def read_bag(path, topics: Optional[Iterable[str]] = None,
             remap: Optional[Dict[str, str]] = None, warn=None) -> Iterator[Tuple[str, int, object]]:
    """Yield (topic after remapping, stamp_ns, rclpy message) in bag order. The stamp is the header stamp when the
    message has one, else the bag's receive time. ``topics`` filters by the bag's own topic names.

    A truncated mcap (no summary, a cut chunk) is salvaged: the readable messages are yielded and ``warn`` (default:
    the logging module) gets one line with their count."""
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    remap = dict(remap or {})
    ts2, _ = _stores()
    yielded = 0
    try:
        with AnyReader([path], default_typestore=ts2) as reader:
            conns = [c for c in reader.connections if topics is None or c.topic in set(topics)]
            if topics is not None and not conns:
                have = sorted({c.topic for c in reader.connections})
                raise BagError(f"bag {path} has none of the topics {sorted(topics)}; it has {have}")
            for conn, t_ns, raw in reader.messages(connections=conns):
                cls = message_class(conn.msgtype)
                if reader.is2:
                    msg = deserialize_message(bytes(raw), cls)
                else:
                    obj = convert(reader.deserialize(raw, conn.msgtype), conn.msgtype, ts2)
                    msg = deserialize_message(bytes(ts2.serialize_cdr(obj, conn.msgtype)), cls)
                yielded += 1
                yield remap.get(conn.topic, conn.topic), _header_ns(msg) or int(t_ns), msg
    except BagError:
        raise
    except Exception as e:  # rosbags raises several unrelated types for truncated/corrupt files
        if yielded or not _has_mcap(path):
            raise BagError(f"cannot read bag {path}: {type(e).__name__}: {e}") from e
        cause = f"{type(e).__name__}: {e}"
    else:
        return
    types, raw = salvage_mcap(path, topics)
    if topics is not None and not set(topics) & set(types):
        raise BagError(f"bag {path} has none of the topics {sorted(topics)}; it has {sorted(types)}")
    _warn(warn, f"bag {path} is truncated or damaged ({cause}); salvaged {len(raw)} readable messages "
                f"({', '.join(f'{t}: {sum(r[0] == t for r in raw)}' for t in sorted({r[0] for r in raw}))})")
    for topic, t_ns, msgtype, data in raw:
        msg = deserialize_message(bytes(data), message_class(msgtype))
        yield remap.get(topic, topic), _header_ns(msg) or int(t_ns), msg


def bag_topics(path) -> Dict[str, str]:
    """{topic: msgtype} of a bag (of its readable part for a truncated mcap)."""
    from rosbags.highlevel import AnyReader

    ts2, _ = _stores()
    try:
        with AnyReader([Path(path)], default_typestore=ts2) as reader:
            return {c.topic: c.msgtype for c in reader.connections}
    except Exception as e:
        if _has_mcap(Path(path)):
            try:
                return salvage_mcap(path)[0]
            except BagError:
                pass
        raise BagError(f"cannot read bag {path}: {type(e).__name__}: {e}") from e


def write_bag(path, messages: List[Tuple[str, int, object]], storage: str = "mcap") -> Path:
    """Write (topic, stamp_ns, rclpy message) tuples to a ROS 2 bag directory (mcap/sqlite3) or a ROS 1 .bag."""
    from rclpy.serialization import serialize_message

    if storage not in STORAGES:
        raise ValueError(f"unknown bag storage {storage!r}; choose one of {STORAGES}")
    path = Path(path)
    ts2, ts1 = _stores()
    types = {}
    for topic, _, msg in messages:
        mt = type(msg).__module__.split(".")[0] + "/msg/" + type(msg).__name__
        types.setdefault(topic, mt)
    if storage == "ros1":
        from rosbags.rosbag1 import Writer as Writer1

        with Writer1(path) as w:
            conns = {tp: w.add_connection(tp, mt, typestore=ts1) for tp, mt in types.items()}
            for topic, stamp, msg in messages:
                obj2 = ts2.deserialize_cdr(serialize_message(msg), types[topic])
                obj1 = convert(obj2, types[topic], ts1)
                w.write(conns[topic], int(stamp), ts1.serialize_ros1(obj1, types[topic]))
        return path
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {tp: w.add_connection(tp, mt, typestore=ts2) for tp, mt in types.items()}
        for topic, stamp, msg in messages:
            w.write(conns[topic], int(stamp), serialize_message(msg))
    return path


def is_bag(path) -> bool:
    p = Path(path)
    if p.is_file():
        return p.suffix in (".bag", ".mcap", ".db3")
    return (p / "metadata.yaml").is_file()


def dataset_to_bag(dataset, path, storage: str = "mcap", condition: Optional[str] = None,
                   image_topic: str = "/camera/image_raw", info_topic: str = "/camera/camera_info",
                   gt_topic: str = "/ground_truth/camera_pose", frame_id: str = "camera_optical",
                   encoding: str = "rgb8", max_frames: int = 0) -> Path:
    """Write a dataset's queries (time order) as a bag: Image + CameraInfo + ground-truth camera PoseStamped in
    ``map`` per frame, stamped with the query stamps (10 Hz when the dataset has none)."""
    from imp_core.imageio import read_image
    from geometry_msgs.msg import PoseStamped

    from imp_ros import conversions as cv

    items = sorted(dataset.queries(condition), key=lambda q: (q.stamp or 0.0, q.name))
    if max_frames:
        items = items[:max_frames]
    msgs = []
    for i, q in enumerate(items):
        ns = int(round((q.stamp if q.stamp is not None else i * 0.1) * 1e9)) + 1_000_000_000
        try:
            rgb = read_image(q.path)
        except (FileNotFoundError, ValueError) as e:
            raise BagError(f"cannot read image {q.path} for bag {path}: {e}") from e
        msgs.append((info_topic, ns, cv.camera_to_info(q.camera, frame_id, ns)))
        if q.gt_pose is not None:
            ps = PoseStamped(pose=cv.pose_to_msg(q.gt_pose.inverse()))
            ps.header.frame_id, ps.header.stamp = "map", cv.ns_to_stamp(ns)
            msgs.append((gt_topic, ns, ps))
        msgs.append((image_topic, ns, cv.rgb_to_image(rgb, encoding, frame_id, ns)))
    return write_bag(path, msgs, storage)
