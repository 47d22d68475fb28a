; Benchmark payload (boot ROM, real mode): print "B" on COM1, do ITER port writes to 0x80 (a POST-code
; port both tsbhyve and QEMU emulate), print "E", then exit through port 0xF4 (tsbhyve's pc-testdev,
; QEMU's isa-debug-exit). ITER comes from the command line: nasm -DITER=n.
bits 16
org 0
%ifndef ITER
%define ITER 100000
%endif
start:
  cli
  mov dx, 0x3f8
  mov al, 'B'
  out dx, al
  mov ecx, ITER
.loop:
  out 0x80, al
  dec ecx
  jnz .loop
  mov dx, 0x3f8
  mov al, 'E'
  out dx, al
  mov al, 0
  out 0xf4, al
.hang:
  hlt
  jmp .hang
times 0xFFF0-($-$$) db 0
  jmp start
times 0x10000-($-$$) db 0
