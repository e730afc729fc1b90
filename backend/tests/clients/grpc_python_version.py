"""One CRI Version call from grpc-python with its default unix-socket target.

grpc-python >= 1.57 sends the percent-encoded socket path as :authority for a `unix:PATH`
target, which h2 alone rejects. Prints the response's fields as `name=value` lines for the
test to check. Usage: python grpc_python_version.py SOCKET_PATH
"""
import sys

import grpc


def fields(message):
    """The length-delimited fields of a flat protobuf message, by field number."""
    out, i = {}, 0
    while i < len(message):
        key, i = varint(message, i)
        number, wire_type = key >> 3, key & 7
        if wire_type != 2:
            raise ValueError(f"unexpected wire type {wire_type} for field {number}")
        length, i = varint(message, i)
        out[number] = message[i:i + length].decode()
        i += length
    return out


def varint(data, i):
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def main():
    socket_path = sys.argv[1]
    print(f"grpcio={grpc.__version__}")
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        version = channel.unary_unary(
            "/runtime.v1.RuntimeService/Version",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        # VersionRequest{version: "v1"}
        response = fields(version(b"\x0a\x02v1", timeout=10))
    names = {1: "version", 2: "runtime_name", 3: "runtime_version", 4: "runtime_api_version"}
    for number, value in sorted(response.items()):
        print(f"{names.get(number, number)}={value}")


if __name__ == "__main__":
    main()
