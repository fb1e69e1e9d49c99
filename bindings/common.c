/* Helpers shared by the bindings. */
#include "bindings.h"

void binding_setref(lua_State *L, int idx, int *ref) {
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
  if (lua_isnoneornil(L, idx)) return;
  lua_pushvalue(L, idx);
  *ref = luaL_ref(L, LUA_REGISTRYINDEX);
}
