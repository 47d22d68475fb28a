; fwcfg.asm - QEMU fw_cfg from 32-bit protected mode: the port interface
; (selector 0x510, data 0x511) and the DMA interface (0x514/0x518).
;
; Output (hex values; <...> vary with the VMM's items):
;   fwcfg: protected mode up
;   SIG 554d4551                      "QEMU" read through the data port (LE dword)
;   OK fwcfg-sig
;   ID <000000xx>                     FW_CFG_ID; bit 1 = DMA
;   DMASIG 554d4551 47464320          dwords at 0x514 and 0x518 ("QEMU CFG")
;   OK fwcfg-dmasig
;   FILES <n> DIR <port sum> <dma sum>   directory size + checksums of the
;   OK fwcfg-dir                         directory read both ways
;   then per file (in directory order):
;   FILE <select4> <size8> <port sum8> <dma sum8> <name>
;   and OK fwcfg-files if every file's two sums agree and each DMA ended with
;   control = 0
;   DMAERR 00000001                   DMA read into the PCI hole: control = ERROR
;   OK fwcfg-dmaerr
;   DONE fwcfg fails=00
;
; Checksum of a byte string: s = 0; for each byte b: s = rol(s, 5) + b.
; Files larger than MAX_FILE are read only through the port ("DMA" sum = port).
%include "rom.inc"

%define FWCFG_SEL       0x510
%define FWCFG_DATA      0x511
%define FWCFG_DMA_HI    0x514
%define FWCFG_DMA_LO    0x518
%define CTL_ERROR       0x01
%define CTL_READ        0x02
%define CTL_SELECT      0x08
%define DIR_BUF         0x200000        ; port copy of the directory
%define DIR_DMA_BUF     0x280000        ; DMA copy of the directory
%define DATA_BUF        0x400000        ; DMA target for files
%define DESC            0x1F0000        ; DMA descriptor (16 bytes)
%define MAX_FILE        0x2000000       ; 32 MiB
%define PCI_HOLE        0xC0000000
%define POLL_LIMIT      0x1000000

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

        ; ---- signature and ID through the ports ------------------------------
        mov ax, 0
        call select
        call read_dword
        PRINT32 msg_sig
        call hex32_32
        call crlf32
        cmp eax, 0x554d4551
        mov esi, str_sig
        call report32

        mov ax, 1
        call select
        call read_dword
        mov [fw_id], eax
        PRINT32 msg_id
        call hex32_32
        call crlf32

        ; ---- DMA signature register -------------------------------------------
        mov dx, FWCFG_DMA_HI
        in eax, dx
        mov ebx, eax
        mov dx, FWCFG_DMA_LO
        in eax, dx
        mov ecx, eax
        PRINT32 msg_dmasig
        mov eax, ebx
        call hex32_32
        call space32
        mov eax, ecx
        call hex32_32
        call crlf32
        cmp ebx, 0x554d4551
        jne .dmasig_done
        cmp ecx, 0x47464320
.dmasig_done:
        mov esi, str_dmasig
        call report32

        ; ---- directory: port copy and DMA copy ----------------------------------
        mov ax, 0x19
        call select
        call read_dword
        bswap eax
        mov [nfiles], eax
        mov ecx, eax
        shl ecx, 6
        add ecx, 4
        mov [dirsize], ecx
        mov edi, DIR_BUF
        bswap eax
        mov [edi], eax                  ; keep the count (big-endian) in the copy
        add edi, 4
        sub ecx, 4
        call read_port_into             ; EDI, ECX
        mov esi, DIR_BUF
        mov ecx, [dirsize]
        call checksum
        mov [dir_port_sum], eax
        mov eax, (0x19 << 16) | CTL_SELECT | CTL_READ
        mov ecx, [dirsize]
        mov edi, DIR_DMA_BUF
        call dma
        mov [last_ctl], eax
        mov esi, DIR_DMA_BUF
        mov ecx, [dirsize]
        call checksum
        mov [dir_dma_sum], eax
        PRINT32 msg_files
        mov eax, [nfiles]
        call hex32_32
        PRINT32 msg_dir
        mov eax, [dir_port_sum]
        call hex32_32
        call space32
        mov eax, [dir_dma_sum]
        call hex32_32
        call crlf32
        mov eax, [dir_port_sum]
        cmp eax, [dir_dma_sum]
        jne .dir_done
        cmp dword [last_ctl], 0
.dir_done:
        mov esi, str_dir
        call report32

        ; ---- every file, both ways -----------------------------------------------
        mov dword [bad_files], 0
        mov dword [index], 0
.file:  mov eax, [index]
        cmp eax, [nfiles]
        jae .files_done
        shl eax, 6
        lea ebp, [DIR_BUF + 4 + eax]    ; entry
        mov eax, [ebp]
        bswap eax
        mov [fsize], eax
        movzx eax, word [ebp + 4]
        xchg al, ah
        mov [fsel], eax
        ; port
        call select
        mov ecx, [fsize]
        xor edx, edx                    ; running sum
.pbyte: test ecx, ecx
        jz .pdone
        push edx
        mov dx, FWCFG_DATA
        in al, dx
        pop edx
        rol edx, 5
        movzx eax, al
        add edx, eax
        dec ecx
        jmp .pbyte
.pdone: mov [port_sum], edx
        ; DMA
        mov [dma_sum], edx
        mov dword [last_ctl], 0
        mov ecx, [fsize]
        cmp ecx, MAX_FILE
        ja .dskip
        mov eax, [fsel]
        shl eax, 16
        or eax, CTL_SELECT | CTL_READ
        mov edi, DATA_BUF
        call dma
        mov [last_ctl], eax
        mov esi, DATA_BUF
        mov ecx, [fsize]
        call checksum
        mov [dma_sum], eax
.dskip: PRINT32 msg_file
        mov eax, [fsel]
        call hex16_32
        call space32
        mov eax, [fsize]
        call hex32_32
        call space32
        mov eax, [port_sum]
        call hex32_32
        call space32
        mov eax, [dma_sum]
        call hex32_32
        call space32
        lea esi, [ebp + 8]
        call puts32
        call crlf32
        mov eax, [port_sum]
        cmp eax, [dma_sum]
        jne .fbad
        cmp dword [last_ctl], 0
        je .fnext
.fbad:  inc dword [bad_files]
.fnext: inc dword [index]
        jmp .file
.files_done:
        cmp dword [bad_files], 0
        mov esi, str_files
        call report32

        ; ---- DMA into the PCI hole must fail with ERROR ----------------------------
        mov eax, (0 << 16) | CTL_SELECT | CTL_READ
        mov ecx, 4
        mov edi, PCI_HOLE
        call dma
        mov ebx, eax
        PRINT32 msg_dmaerr
        mov eax, ebx
        call hex32_32
        call crlf32
        cmp ebx, CTL_ERROR
        mov esi, str_dmaerr
        call report32

        mov esi, str_name
        jmp finish32

; select - AX = item key.
select:
        push edx
        mov dx, FWCFG_SEL
        out dx, ax
        pop edx
        ret

; read_dword - EAX = next 4 data bytes (first byte in AL).
read_dword:
        push ecx
        push edx
        mov ecx, 4
        mov dx, FWCFG_DATA
.l:     in al, dx
        ror eax, 8
        dec ecx
        jnz .l
        pop edx
        pop ecx
        ret

; read_port_into - ECX bytes from the data port to [EDI].
read_port_into:
        push eax
        push edx
        mov dx, FWCFG_DATA
.l:     test ecx, ecx
        jz .d
        in al, dx
        mov [edi], al
        inc edi
        dec ecx
        jmp .l
.d:     pop edx
        pop eax
        ret

; checksum - EAX = sum of ECX bytes at ESI.  Clobbers ECX, ESI.
checksum:
        push ebx
        xor eax, eax
.l:     test ecx, ecx
        jz .d
        rol eax, 5
        movzx ebx, byte [esi]
        add eax, ebx
        inc esi
        dec ecx
        jmp .l
.d:     pop ebx
        ret

; dma - EAX = control, ECX = length, EDI = target (below 4 GiB).  Builds the
; big-endian descriptor at DESC, writes the address (high, then low, both
; byte-swapped) and polls control.  Returns EAX = final control (host order),
; or 0xFFFFFFFF if it never completed.
dma:
        push ecx
        push edx
        bswap eax
        mov [DESC], eax
        bswap ecx
        mov [DESC + 4], ecx
        mov dword [DESC + 8], 0
        mov eax, edi
        bswap eax
        mov [DESC + 12], eax
        xor eax, eax
        mov dx, FWCFG_DMA_HI
        out dx, eax
        mov eax, DESC
        bswap eax
        mov dx, FWCFG_DMA_LO
        out dx, eax
        mov ecx, POLL_LIMIT
.poll:  mov eax, [DESC]
        bswap eax
        test eax, ~CTL_ERROR
        jz .done
        dec ecx
        jnz .poll
        mov eax, 0xFFFFFFFF
.done:  pop edx
        pop ecx
        ret

msg_up:         db "fwcfg: protected mode up", 13, 10, 0
msg_sig:        db "SIG ", 0
msg_id:         db "ID ", 0
msg_dmasig:     db "DMASIG ", 0
msg_files:      db "FILES ", 0
msg_dir:        db " DIR ", 0
msg_file:       db "FILE ", 0
msg_dmaerr:     db "DMAERR ", 0
str_sig:        db "fwcfg-sig", 0
str_dmasig:     db "fwcfg-dmasig", 0
str_dir:        db "fwcfg-dir", 0
str_files:      db "fwcfg-files", 0
str_dmaerr:     db "fwcfg-dmaerr", 0
str_name:       db "fwcfg", 0

align 4
fw_id:          dd 0
nfiles:         dd 0
dirsize:        dd 0
dir_port_sum:   dd 0
dir_dma_sum:    dd 0
last_ctl:       dd 0
bad_files:      dd 0
index:          dd 0
fsize:          dd 0
fsel:           dd 0
port_sum:       dd 0
dma_sum:        dd 0

%include "uart32.inc"
%include "report32.inc"
        STAGE_GDT
STAGE_END
