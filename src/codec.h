/*
** codec.h -- mp.encode, mp.decode and mp.register: the codec's Lua API.
** Builds on encode.h and decode.h.
*/
#ifndef LMP_CODEC_H
#define LMP_CODEC_H

#include "decode.h"
#include "encode.h"

/* adds encode, decode and register to the module table on top */
LMP_INTERNAL void lmp_codec_open(lua_State *L);

#endif
