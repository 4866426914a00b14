import VirtioCore
import XCTest

/// Parsing, formatting and random generation of Ethernet addresses.
final class MACAddressTests: XCTestCase {
    func testParsesColonAndDashForms() throws {
        let colon = try XCTUnwrap(MACAddress("02:00:5e:10:00:0a"))
        XCTAssertTrue(colon.bytes == (0x02, 0x00, 0x5E, 0x10, 0x00, 0x0A))
        let dash = try XCTUnwrap(MACAddress("AA-BB-CC-DD-EE-FF"))
        XCTAssertTrue(dash.bytes == (0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF))
        XCTAssertEqual(MACAddress("aa:bb:cc:dd:ee:ff"), dash, "parsing ignores case")
    }

    func testFormatsLowercaseWithLeadingZeroes() {
        XCTAssertEqual(MACAddress(0x02, 0, 0x5E, 0x0F, 0xA0, 1).description, "02:00:5e:0f:a0:01")
        XCTAssertEqual(MACAddress(0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF).description, "ff:ff:ff:ff:ff:ff")
        XCTAssertEqual(MACAddress(0, 0, 0, 0, 0, 0).description, "00:00:00:00:00:00")
    }

    func testRoundTripsThroughText() {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<200 {
            let r = rng.next()
            let address = MACAddress(UInt8(truncatingIfNeeded: r), UInt8(truncatingIfNeeded: r >> 8),
                                     UInt8(truncatingIfNeeded: r >> 16), UInt8(truncatingIfNeeded: r >> 24),
                                     UInt8(truncatingIfNeeded: r >> 32), UInt8(truncatingIfNeeded: r >> 40))
            XCTAssertEqual(MACAddress(address.description), address)
        }
    }

    func testRejectsMalformedText() {
        let bad = [
            "", "aa", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "aa:bb:cc:dd:ee:gg",
            "a:bb:cc:dd:ee:ff", "aaa:bb:cc:dd:ee:ff", "aabbccddeeff", "aa:bb:cc:dd:ee:f",
            "aa bb cc dd ee ff", "zz:zz:zz:zz:zz:zz", "aa:bb:cc:dd:ee:ff ",
            // Empty fields and signs once slipped through.
            "aa::bb:cc:dd:ee:ff", ":aa:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:ff:", "aa::::bb:cc:dd:ee:ff",
            "+a:bb:cc:dd:ee:ff", "-a:bb:cc:dd:ee:ff",
        ]
        for text in bad {
            XCTAssertNil(MACAddress(text), "'\(text)' must not parse")
        }
    }

    func testRandomLocalIsLocallyAdministeredUnicast() {
        var seen = Set<MACAddress>()
        for _ in 0..<1000 {
            let address = MACAddress.randomLocal()
            XCTAssertTrue(address.isLocallyAdministered, address.description)
            XCTAssertFalse(address.isMulticast, address.description)
            XCTAssertEqual(address.bytes.0 & 0x03, 0x02)
            seen.insert(address)
        }
        // 40 random bits per address: 1000 draws colliding down to a handful is impossible in practice.
        XCTAssertGreaterThan(seen.count, 990)
    }

    func testFlags() {
        XCTAssertTrue(MACAddress(0x01, 0, 0x5E, 0, 0, 1).isMulticast)
        XCTAssertFalse(MACAddress(0x01, 0, 0x5E, 0, 0, 1).isLocallyAdministered)
        XCTAssertTrue(MACAddress(0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF).isMulticast)
        XCTAssertFalse(MACAddress(0x00, 0x1B, 0x21, 0, 0, 1).isLocallyAdministered)
    }

    func testWriteStoresSixBytesInWireOrder() {
        var buffer = [UInt8](repeating: 0xEE, count: 8)
        buffer.withUnsafeMutableBytes { MACAddress(1, 2, 3, 4, 5, 6).write(to: $0.baseAddress! + 1) }
        XCTAssertEqual(buffer, [0xEE, 1, 2, 3, 4, 5, 6, 0xEE])
    }

    func testEqualityAndHashing() {
        let a = MACAddress(2, 0, 0, 0, 0, 1), b = MACAddress(2, 0, 0, 0, 0, 1), c = MACAddress(2, 0, 0, 0, 0, 2)
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a, c)
        XCTAssertEqual(Set([a, b, c]).count, 2)
    }
}
