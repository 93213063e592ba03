"""A pymodbus server for Outpost's tests: Modbus TCP on an ephemeral port, or
RTU on a serial device (one end of a socat pty pair).

Usage: modbus_server.py SPEC.json (--tcp | --rtu-over-tcp [--port N] | --serial PATH [--baud N])

The spec lists devices and their tables; typed values are encoded here with
Python's struct module, independently of the gateway's own codec:

  {"devices": [{"id": 1,
     "coils":    [{"addr": 0, "values": [true, false]}],
     "discrete": [{"addr": 0, "values": [false, true]}],
     "holding":  [{"addr": 0, "type": "f32", "order": "CDAB", "value": 1.5},
                  {"addr": 10, "registers": [1, 2, 3]},
                  {"addr": 20, "type": "string", "length": 4, "value": "PUMP"}],
     "input":    [...]}]}

Prints "ready PORT" (TCP) or "ready" (serial) once serving, then one line per
request: "req DEVICE FUNCTION ADDRESS COUNT". Commands on stdin, one a line:
  dead ID / alive ID            stop / resume answering for a unit
  corrupt crc|truncate|garbage N   spoil the next N responses
"""

import argparse
import asyncio
import json
import struct
import sys
import threading

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.framer import FramerType
from pymodbus.simulator import DataType, SimData, SimDevice

FORMATS = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "u64": ">Q", "i64": ">q", "f32": ">f", "f64": ">d"}


def to_registers(entry):
    if "registers" in entry:
        return list(entry["registers"])
    kind = entry["type"]
    if kind == "string":
        raw = entry["value"].encode().ljust(2 * entry["length"], b"\0")
    else:
        raw = struct.pack(FORMATS[kind], entry["value"])
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    order = entry.get("order", "ABCD")
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    if order in ("CDAB", "DCBA") and kind != "string":
        words = words[::-1]
    return [int.from_bytes(w, "big") for w in words]


def blocks(entries, bits):
    if not entries:
        # pymodbus wants every table non-empty: one far-away placeholder.
        if bits:
            return [SimData(65000, values=[False], datatype=DataType.BITS)]
        return [SimData(65000, values=[0], datatype=DataType.REGISTERS)]
    out = []
    for e in sorted(entries, key=lambda e: e["addr"]):
        if bits:
            out.append(SimData(e["addr"], values=list(e["values"]), datatype=DataType.BITS))
        else:
            out.append(SimData(e["addr"], values=to_registers(e), datatype=DataType.REGISTERS))
    return out


NOBODY = 246


def crc16(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


class Faults:
    def __init__(self, serial):
        self.serial = serial
        self.dead = set()
        self.corrupt = []  # kinds for the next responses

    def unit_of(self, data):
        if self.serial:
            return data[0] if data else None
        return data[6] if len(data) > 6 else None

    def packet(self, sending, data):
        if not sending:
            if self.unit_of(data) in self.dead:
                if self.serial:
                    # Spoil the CRC: like any RTU device, the server ignores
                    # the frame, so the request goes unanswered.
                    return data[:-1] + bytes([data[-1] ^ 0xFF])
                # TCP: a unit nobody is (gateway-style silence is not
                # available in the simulator, which answers every unit).
                return data[:6] + bytes([NOBODY]) + data[7:]
            return data
        if self.corrupt:
            kind = self.corrupt.pop(0)
            if kind == "crc":
                return data[:-1] + bytes([data[-1] ^ 0xFF])
            if kind == "truncate":
                return data[: max(1, len(data) // 2)]
            if kind == "garbage":
                return bytes([0x00, 0x55, 0xAA, 0xFF, 0x13]) + data
        return data


def commands(faults):
    """Reads commands on a plain thread: independent of the server's event loop."""
    for line in sys.stdin:
        words = line.split()
        if len(words) == 2 and words[0] == "dead":
            faults.dead.add(int(words[1]))
        elif len(words) == 2 and words[0] == "alive":
            faults.dead.discard(int(words[1]))
        elif len(words) == 3 and words[0] == "corrupt":
            faults.corrupt.extend([words[1]] * int(words[2]))
        print("ok " + " ".join(words), flush=True)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("--tcp", action="store_true")
    ap.add_argument("--rtu-over-tcp", action="store_true")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--serial")
    ap.add_argument("--baud", type=int, default=115200)
    args = ap.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    devices = [
        SimDevice(
            id=d["id"],
            simdata=(
                blocks(d.get("coils", []), True),
                blocks(d.get("discrete", []), True),
                blocks(d.get("holding", []), False),
                blocks(d.get("input", []), False),
            ),
        )
        for d in spec["devices"]
    ]
    faults = Faults(serial=args.serial is not None)

    def trace_pdu(sending, pdu):
        if not sending:
            count = getattr(pdu, "count", 0)
            print(f"req {pdu.dev_id} {pdu.function_code} {pdu.address} {count}", flush=True)
        return pdu

    if args.tcp or args.rtu_over_tcp:
        server = ModbusTcpServer(
            devices, address=("127.0.0.1", args.port), ignore_missing_devices=True,
            framer=FramerType.RTU if args.rtu_over_tcp else FramerType.SOCKET,
            trace_pdu=trace_pdu, trace_packet=faults.packet,
        )
    else:
        server = ModbusSerialServer(
            devices, framer=FramerType.RTU, port=args.serial, baudrate=args.baud,
            ignore_missing_devices=True, trace_pdu=trace_pdu, trace_packet=faults.packet,
        )
    task = asyncio.create_task(server.serve_forever())
    for _ in range(100):
        await asyncio.sleep(0.05)
        if server.transport is not None:
            break
    if args.tcp or args.rtu_over_tcp:
        print(f"ready {server.transport.sockets[0].getsockname()[1]}", flush=True)
    else:
        print("ready", flush=True)
    threading.Thread(target=commands, args=(faults,), daemon=True).start()
    await task


if __name__ == "__main__":
    asyncio.run(main())
