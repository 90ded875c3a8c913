"""Sans-I/O codecs: bytes in, typed frames out, and back. No asyncio, serial, sockets, python-can
or pymodbus may be imported anywhere below this package."""
