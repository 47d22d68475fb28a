; memory.asm - guest RAM round trips and MMIO exits from 32-bit protected mode.
;
; Real mode copies the stage to 0x7000 and enters flat 32-bit protected mode
; from RAM.  Output (values shown are the expected ones on tsbhyve):
;   memory: protected mode up
;   MEMSUM xxxxxxxx MEMERR 00000000   checksum of a xorshift32 fill of
;                                     0x100000..0x10FFFF, mismatching dwords
;   OK memory-pattern
;   UNALIGNED 11223344 11223344       dword across a page boundary (0x120FFE):
;                                     dword read, then the same assembled from bytes
;   OK memory-unaligned
;   PCIHOLE ffffffff ffffffff ffff ff reads of 0xDFFFF000 (dword, dword after a
;                                     write, word, byte)
;   OK memory-pcihole                 (QEMU TCG returns zeros here: FAIL on QEMU)
;   LAPICID xxxxxxxx                  0xFEE00020 (BSP: 00000000)
;   LAPICVER xxxxxxxx                 0xFEE00030 (version byte 0x10..0x1f)
;   OK memory-lapic
;   IOAPICVER xxxxxxxx                IOREGSEL=1 at 0xFEC00000, IOWIN 0xFEC00010
;   OK memory-ioapic                  (version byte 0x10..0x2f)
;   DONE memory fails=00
; then exits with the failure count on port 0xF4.
;
; MEMSUM: x = 0x12345678; 16384 times { x ^= x << 13; x ^= x >> 17;
; x ^= x << 5; store x }; sum = 0; for each stored v: sum = rol(sum, 5) + v.
%include "rom.inc"

%define FILL_BASE       0x100000
%define FILL_DWORDS     16384           ; 64 KiB
%define FILL_SEED       0x12345678
%define UNALIGNED_ADDR  0x120FFE
%define PCI_HOLE        0xDFFFF000   ; top page of the 32-bit BAR window: BARs are allocated from its bottom

ROM_BEGIN
rom_entry:
        ROM_ENTER_STAGE stage_bsp_entry
ROM_END

STAGE_BEGIN
        STAGE_PM_ENTRY
[bits 32]
pm_main:
        call uart_init32
        PRINT32 msg_up

        ; ---- fill with xorshift32 --------------------------------------------
        mov edi, FILL_BASE
        mov ecx, FILL_DWORDS
        mov eax, FILL_SEED
.fill:  call xorshift
        mov [edi], eax
        add edi, 4
        dec ecx
        jnz .fill

        ; ---- read back: checksum + compare against the regenerated sequence -
        mov esi, FILL_BASE
        mov ecx, FILL_DWORDS
        mov eax, FILL_SEED
        xor edx, edx                    ; checksum
        xor ebp, ebp                    ; mismatches
.check: call xorshift
        mov ebx, [esi]
        cmp ebx, eax
        je .same
        inc ebp
.same:  rol edx, 5
        add edx, ebx
        add esi, 4
        dec ecx
        jnz .check
        PRINT32 msg_memsum
        mov eax, edx
        call hex32_32
        PRINT32 msg_memerr
        mov eax, ebp
        call hex32_32
        call crlf32
        test ebp, ebp
        mov esi, str_pattern
        call report32

        ; ---- dword across a 4 KiB page boundary --------------------------------
        mov edi, UNALIGNED_ADDR
        mov dword [edi], 0x11223344
        mov eax, [edi]
        mov ebx, eax
        movzx ecx, byte [edi + 3]
        shl ecx, 8
        mov cl, [edi + 2]
        shl ecx, 8
        mov cl, [edi + 1]
        shl ecx, 8
        mov cl, [edi]
        PRINT32 msg_unaligned
        call hex32_32
        call space32
        mov eax, ecx
        call hex32_32
        call crlf32
        xor eax, eax                    ; ZF=1 <=> ebx == ecx == 0x11223344
        cmp ebx, 0x11223344
        jne .ua_bad
        cmp ecx, 0x11223344
        je .ua_eval
.ua_bad:
        inc eax
.ua_eval:
        test eax, eax
        mov esi, str_unaligned
        call report32

        ; ---- unassigned MMIO in the PCI hole ---------------------------------------
        mov edi, PCI_HOLE
        mov ebx, [edi]                  ; dword read
        mov dword [edi], 0x12345678     ; ignored write
        mov ecx, [edi]                  ; dword read after the write
        movzx edx, word [edi + 2]       ; word read
        movzx ebp, byte [edi + 1]       ; byte read
        PRINT32 msg_pcihole
        mov eax, ebx
        call hex32_32
        call space32
        mov eax, ecx
        call hex32_32
        call space32
        mov eax, edx
        call hex16_32
        call space32
        mov eax, ebp
        call hex8_32
        call crlf32
        and ebx, ecx                    ; all four must be all-ones
        or edx, 0xFFFF0000
        and ebx, edx
        or ebp, 0xFFFFFF00
        and ebx, ebp
        cmp ebx, 0xFFFFFFFF
        mov esi, str_pcihole
        call report32

        ; ---- LAPIC id / version ------------------------------------------------------
        PRINT32 msg_lapicid
        mov eax, [LAPIC_BASE + 0x20]
        call hex32_32
        call crlf32
        PRINT32 msg_lapicver
        mov eax, [LAPIC_BASE + 0x30]
        call hex32_32
        call crlf32
        and al, 0xF0
        cmp al, 0x10
        mov esi, str_lapic
        call report32

        ; ---- IOAPIC version (index/data pair: MMIO write then read) -------------------
        mov dword [IOAPIC_BASE], 1
        mov eax, [IOAPIC_BASE + 0x10]
        PRINT32 msg_ioapicver
        call hex32_32
        call crlf32
        xor ecx, ecx                    ; ZF=1 <=> 0x10 <= version <= 0x2f
        cmp al, 0x10
        jb .io_bad
        cmp al, 0x2F
        jbe .io_eval
.io_bad:
        inc ecx
.io_eval:
        test ecx, ecx
        mov esi, str_ioapic
        call report32

        mov esi, str_name
        jmp finish32

; xorshift - EAX = next xorshift32 state (clobbers nothing else).
xorshift:
        push ebx
        mov ebx, eax
        shl ebx, 13
        xor eax, ebx
        mov ebx, eax
        shr ebx, 17
        xor eax, ebx
        mov ebx, eax
        shl ebx, 5
        xor eax, ebx
        pop ebx
        ret

msg_up:         db "memory: protected mode up", 13, 10, 0
msg_memsum:     db "MEMSUM ", 0
msg_memerr:     db " MEMERR ", 0
msg_unaligned:  db "UNALIGNED ", 0
msg_pcihole:    db "PCIHOLE ", 0
msg_lapicid:    db "LAPICID ", 0
msg_lapicver:   db "LAPICVER ", 0
msg_ioapicver:  db "IOAPICVER ", 0
str_pattern:    db "memory-pattern", 0
str_unaligned:  db "memory-unaligned", 0
str_pcihole:    db "memory-pcihole", 0
str_lapic:      db "memory-lapic", 0
str_ioapic:     db "memory-ioapic", 0
str_name:       db "memory", 0

%include "uart32.inc"
%include "report32.inc"
        STAGE_GDT
STAGE_END
