; triplediv.asm - triple.asm variant: the exception is #DE from `div` by zero.
%define TRIPLE_METHOD 2
%include "triple.asm"
