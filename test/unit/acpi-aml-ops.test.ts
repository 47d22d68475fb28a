import { describe, expect, test } from "bun:test";
import {
  add, and, arg, call, cat, createDWordField, createWordField, decrement, derefOf, device, eisaId, elseOf, field, FieldAccess,
  findSetRightBit, ifThen, increment, index, lAnd, lEqual, lGreater, lLess, lNot, local, lOr, method, name, not, notify,
  opRegion, or, pkg, ref, RegionSpace, ret, scope, shiftLeft, shiftRight, sizeOf, store, subtract, varPkg, whileLoop,
} from "../../src/acpi/aml.ts";
import {
  dwordIo, dwordMemory, endTag, fixedIo, interrupt, io, irq, irqNoFlags, irqsOfMask, memory32Fixed, qwordMemory, resourceData,
  resourceTemplate, wordBusNumber, wordIo,
} from "../../src/acpi/resources.ts";
import { IASL, compileAsl, hex } from "./acpi-iasl.ts";

const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0).toString(16)).join(" ");

describe("AML expressions and control flow (ACPI 6.x §20.2.5)", () => {
  test("operators with and without a target", () => {
    expect(hex(and(ref("PIRA"), 0x80))).toBe(`7b ${ascii("PIRA")} 0a 80 00`);
    expect(hex(or(local(0), 1, local(1)))).toBe("7d 60 01 61");
    expect(hex(shiftLeft(1, arg(0), local(2)))).toBe("79 01 68 62");
    expect(hex(shiftRight(arg(1), 4))).toBe("7a 69 0a 04 00");
    expect(hex(add(local(0), 2, local(0)))).toBe("72 60 0a 02 60");
    expect(hex(subtract(local(0), 1, local(0)))).toBe("74 60 01 60");
    expect(hex(not(local(0), local(1)))).toBe("80 60 61");
    expect(hex(findSetRightBit(arg(0), local(0)))).toBe("82 68 60");
    expect(hex(increment(local(3)))).toBe("75 63");
    expect(hex(decrement(local(3)))).toBe("76 63");
    expect(hex(store(arg(0), ref("\\PICM")))).toBe(`70 68 5c ${ascii("PICM")}`);
    expect(hex(lEqual(local(0), 5))).toBe("93 60 0a 05");
    expect(hex(lAnd(lGreater(local(0), 1), lLess(local(0), 9)))).toBe("90 94 60 01 95 60 0a 09");
    expect(hex(lOr(lNot(arg(0)), 0))).toBe("91 92 68 00");
    expect(hex(sizeOf(local(0)))).toBe("87 60");
    expect(hex(derefOf(index(arg(0), 2)))).toBe("83 88 68 0a 02 00");
    expect(hex(notify(ref("PWRB"), 0x80))).toBe(`86 ${ascii("PWRB")} 0a 80`);
    expect(hex(call("FOO", 1, local(0)))).toBe(`${ascii("FOO_")} 01 60`);
  });

  test("If / Else / While carry a PkgLength", () => {
    expect(hex(ifThen(arg(0), ret(1)))).toBe("a0 04 68 a4 01");
    expect(hex(elseOf(ret(0)))).toBe("a1 03 a4 00");
    expect(hex(whileLoop(lLess(local(0), 4), increment(local(0))))).toBe("a2 07 95 60 0a 04 75 60");
  });

  test("OperationRegion, Field (with Offset), CreateXField, VarPackage", () => {
    expect(hex(opRegion("PIRQ", RegionSpace.PCI_Config, 0x60, 0x0c))).toBe(`5b 80 ${ascii("PIRQ")} 02 0a 60 0a 0c`);
    expect(hex(opRegion("PMIO", RegionSpace.SystemIO, 0x600, 0x40))).toBe(`5b 80 ${ascii("PMIO")} 01 0b 00 06 0a 40`);
    const f = field("PIRQ", { access: FieldAccess.Byte }, { name: "PIRA", bits: 8 }, { offset: 8 }, { name: "PIRE", bits: 8 });
    // 5B 81 PkgLength NameString flags(ByteAcc, NoLock, Preserve) PIRA 8, Reserved 56 bits, PIRE 8
    expect(hex(f)).toBe(`5b 81 12 ${ascii("PIRQ")} 01 ${ascii("PIRA")} 08 00 38 ${ascii("PIRE")} 08`);
    expect(hex(field("X", { access: FieldAccess.DWord, lock: true, update: 2 }, { name: "BIG", bits: 100 }))).toBe(`5b 81 0c ${ascii("X___")} 53 ${ascii("BIG_")} 44 06`);
    expect(() => field("X", {}, { name: "A", bits: 16 }, { offset: 1 })).toThrow();
    expect(hex(createWordField(arg(0), 1, "IRQM"))).toBe(`8b 68 01 ${ascii("IRQM")}`);
    expect(hex(createDWordField(ref("BUF0"), 4, "DW0"))).toBe(`8a ${ascii("BUF0")} 0a 04 ${ascii("DW0_")}`);
    expect(hex(varPkg(arg(0), 1, 2))).toBe("13 05 68 01 0a 02");
  });
});

describe("resource descriptors (ACPI 6.x §6.4)", () => {
  test("small items", () => {
    expect(hex(io(0x3f8, 0x3f8, 1, 8))).toBe("47 01 f8 03 f8 03 01 08");
    expect(hex(io(0x100, 0x1ff, 0x10, 0x20, false))).toBe("47 00 00 01 ff 01 10 20");
    expect(hex(fixedIo(0x60, 1))).toBe("4b 60 00 01");
    expect(hex(irqNoFlags([4]))).toBe("22 10 00");
    expect(hex(irqNoFlags([2, 8]))).toBe("22 04 01");
    expect(hex(irq({ level: true, activeLow: true, shared: true }, [3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15]))).toBe("23 f8 de 18");
    expect(hex(irq({}, [1]))).toBe("23 02 00 01");
    expect(irqsOfMask(0xdef8)).toEqual([3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15]);
    expect(() => irqNoFlags([16])).toThrow();
    expect(() => fixedIo(0x400, 1)).toThrow();
  });

  test("large items", () => {
    expect(hex(memory32Fixed(0xfed00000, 0x400, false))).toBe("86 09 00 00 00 00 d0 fe 00 04 00 00");
    expect(hex(interrupt({ level: true }, [16, 17]))).toBe("89 0a 00 01 02 10 00 00 00 11 00 00 00");
    expect(hex(interrupt({ activeLow: true, shared: true }, [5]))).toBe("89 06 00 0f 01 05 00 00 00");
    expect(hex(wordBusNumber(0, 255))).toBe("88 0d 00 02 0c 00 00 00 00 00 ff 00 00 00 00 01");
    expect(hex(dwordIo(0xd00, 0xffff))).toBe("87 17 00 01 0c 03 00 00 00 00 00 0d 00 00 ff ff 00 00 00 00 00 00 00 f3 00 00");
    expect(dwordMemory(0xc0000000, 0xdfffffff).length).toBe(26);
    expect(qwordMemory(0x800000000n, 0xfffffffffn).length).toBe(46);
    expect(() => dwordIo(10, 5)).toThrow();
  });

  test("end tag and checksum", () => {
    expect(hex(endTag())).toBe("79 00");
    expect(hex(resourceData([irqNoFlags([4])]))).toBe("22 10 00 79 00");
    const withSum = resourceData([io(0x70, 0x70, 1, 2)], { checksum: true });
    expect(withSum.reduce((a, b) => (a + b) & 0xff, 0)).toBe(0);
    expect(hex(resourceTemplate([irqNoFlags([4])]))).toBe("11 08 0a 05 22 10 00 79 00");
  });
});

describe("AML and resources vs iasl", () => {
  if (!IASL) {
    if (process.env.CI) test("iasl is required in CI", () => { throw new Error("iasl not found (install acpica-tools)"); });
    else test.skip("iasl cross-check (iasl not installed)", () => {});
    return;
  }
  test("every encoder matches what iasl compiles", () => {
    const asl = `DefinitionBlock ("", "DSDT", 2, "TSBHYV", "TSBHYVE", 1)
{
    Name (\\PICM, 0)
    Method (\\_PIC, 1, NotSerialized) { Store (Arg0, \\PICM) }
    Device (DEV0)
    {
        Name (_HID, EisaId ("PNP0C02"))
        Name (_CID, "QEMU0002")
        OperationRegion (PIRQ, PCI_Config, 0x60, 0x0C)
        Field (PIRQ, ByteAcc, NoLock, Preserve) { PIRA, 8, PIRB, 8, Offset (0x08), PIRE, 8 }
        OperationRegion (PMIO, SystemIO, 0x0600, 0x40)
        Field (PMIO, DWordAcc, Lock, WriteAsZeros) { BIG, 100 }
        Name (RES0, ResourceTemplate ()
        {
            IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08)
            IO (Decode10, 0x0100, 0x01F0, 0x10, 0x20)
            FixedIO (0x0060, 0x01)
            IRQNoFlags () {2, 8}
            IRQ (Level, ActiveLow, Shared) {3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15}
            IRQ (Edge, ActiveHigh, Exclusive) {1}
            Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) {16, 17}
            Interrupt (ResourceConsumer, Edge, ActiveLow, Shared) {5}
            Memory32Fixed (ReadOnly, 0xFED00000, 0x00000400)
            WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 255, 0, 256)
            WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, 0x0000, 0x0CF7, 0, 0x0CF8)
            DWordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, 0x0D00, 0xFFFF, 0, 0xF300)
            DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite, 0, 0xC0000000, 0xDFFFFFFF, 0, 0x20000000)
            DWordMemory (ResourceConsumer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadOnly, 0, 0xE0000000, 0xEFFFFFFF, 0, 0x10000000)
            QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Prefetchable, ReadWrite, 0, 0x800000000, 0xFFFFFFFFF, 0, 0x800000000)
        })
        Method (_STA, 0, NotSerialized)
        {
            If (And (PIRA, 0x80)) { Return (0x09) }
            Else { Return (0x0B) }
        }
        Method (_SRS, 1, Serialized)
        {
            CreateWordField (Arg0, One, IRQM)
            CreateDWordField (RES0, 4, DW0)
            FindSetRightBit (IRQM, Local0)
            If (Local0) { Decrement (Local0) Store (Local0, PIRA) }
            Or (PIRA, 0x80, PIRA)
            ShiftLeft (One, Arg0, Local2)
            ShiftRight (Arg0, 4, Local6)
            Add (Local0, 2, Local0)
            Subtract (Local0, One, Local0)
            Not (Local0, Local1)
            Increment (Local0)
            While (LLess (Local0, 4)) { Increment (Local0) }
            If (LAnd (LGreater (Local0, One), LLess (Local0, 9))) { Notify (DEV0, 0x80) }
            If (LOr (LNot (Arg0), LEqual (Local0, 5))) { Store (SizeOf (Local0), Local1) }
            Store (DerefOf (Index (Arg0, 2)), Local4)
            Store (Package (Arg0) { 1, 2 }, Local5)
        }
    }
}
`;
    const { body } = compileAsl(asl);
    const ours = cat(
      name("\\PICM", 0),
      method("\\_PIC", { args: 1 }, store(arg(0), ref("\\PICM"))),
      device("DEV0",
        name("_HID", eisaId("PNP0C02")),
        name("_CID", "QEMU0002"),
        opRegion("PIRQ", RegionSpace.PCI_Config, 0x60, 0x0c),
        field("PIRQ", { access: FieldAccess.Byte }, { name: "PIRA", bits: 8 }, { name: "PIRB", bits: 8 }, { offset: 8 }, { name: "PIRE", bits: 8 }),
        opRegion("PMIO", RegionSpace.SystemIO, 0x600, 0x40),
        field("PMIO", { access: FieldAccess.DWord, lock: true, update: 2 }, { name: "BIG", bits: 100 }),
        name("RES0", resourceTemplate([
          io(0x3f8, 0x3f8, 1, 8),
          io(0x100, 0x1f0, 0x10, 0x20, false),
          fixedIo(0x60, 1),
          irqNoFlags([2, 8]),
          irq({ level: true, activeLow: true, shared: true }, [3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15]),
          irq({}, [1]),
          interrupt({ level: true }, [16, 17]),
          interrupt({ activeLow: true, shared: true }, [5]),
          memory32Fixed(0xfed00000, 0x400, false),
          wordBusNumber(0, 255),
          wordIo(0, 0xcf7),
          dwordIo(0xd00, 0xffff),
          dwordMemory(0xc0000000, 0xdfffffff),
          dwordMemory(0xe0000000, 0xefffffff, { consumer: true, cache: 0, readOnly: true }),
          qwordMemory(0x800000000n, 0xfffffffffn, { cache: 3 }),
        ])),
        method("_STA", {}, ifThen(and(ref("PIRA"), 0x80), ret(0x09)), elseOf(ret(0x0b))),
        method("_SRS", { args: 1, serialized: true },
          createWordField(arg(0), 1, "IRQM"),
          createDWordField(ref("RES0"), 4, "DW0"),
          findSetRightBit(ref("IRQM"), local(0)),
          ifThen(local(0), decrement(local(0)), store(local(0), ref("PIRA"))),
          or(ref("PIRA"), 0x80, ref("PIRA")),
          shiftLeft(1, arg(0), local(2)),
          shiftRight(arg(0), 4, local(6)),
          add(local(0), 2, local(0)),
          subtract(local(0), 1, local(0)),
          not(local(0), local(1)),
          increment(local(0)),
          whileLoop(lLess(local(0), 4), increment(local(0))),
          ifThen(lAnd(lGreater(local(0), 1), lLess(local(0), 9)), notify(ref("DEV0"), 0x80)),
          ifThen(lOr(lNot(arg(0)), lEqual(local(0), 5)), store(sizeOf(local(0)), local(1))),
          store(derefOf(index(arg(0), 2)), local(4)),
          store(varPkg(arg(0), 1, 2), local(5)),
        ),
      ),
    );
    expect(hex(ours)).toBe(hex(body));
  });

  test("Scope and packages of name references", () => {
    const { body } = compileAsl(`DefinitionBlock ("", "DSDT", 2, "TSBHYV", "TSBHYVE", 1)
{
    Scope (\\_SB) { Device (LNKA) { Name (_UID, One) } Name (PRT0, Package () { Package () { 0x0003FFFF, 0, \\_SB.LNKA, 0 } }) }
}
`);
    const { nameString } = require("../../src/acpi/aml.ts") as typeof import("../../src/acpi/aml.ts");
    expect(hex(scope("\\_SB", device("LNKA", name("_UID", 1)), name("PRT0", pkg(pkg(0x3ffff, 0, nameString("\\_SB.LNKA"), 0)))))).toBe(hex(body));
  });
});
