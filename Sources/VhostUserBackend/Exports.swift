// The types of ours an operator's code meets in the back-end's and the switch's API, re-exported
// by name: importing VhostUserBackend gives exactly these, not the modules below it.
@_exported import enum VirtioCore.ConnectionMode
@_exported import struct VirtioCore.MACAddress
@_exported import struct VirtioCore.SocketFileAccess
@_exported import enum VirtioCore.VirtioError
@_exported import enum VirtioCore.ConnectionFailure
@_exported import enum VirtioCore.NegotiationFailure
@_exported import enum VirtioCore.MemoryFailure
@_exported import enum VirtioCore.RingViolation
@_exported import enum VirtioCore.ProtocolViolation
@_exported import struct VirtioCore.InvalidSetting
@_exported import enum VirtioCore.StateFailure
@_exported import struct VirtioCore.SystemCallFailure
@_exported import struct VirtioCore.VirtioFeatures
@_exported import struct VhostUser.VhostUserProtocolFeatures
