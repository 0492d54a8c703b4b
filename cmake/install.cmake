# `make install PREFIX=... DESTDIR=...` (or `cmake --install build --prefix P`):
#   PREFIX/bin/{agiled,agilectl,agile-memd,agile-qemu}
#   PREFIX/lib/agile/libagile-shim.so            (agiled finds it from its own path)
#   PREFIX/share/agile/guest/{vmlinuz,initrd.img} (when `make guest` has built them)
#   PREFIX/share/man/man1/agilectl.1, man8/{agiled,agile-memd}.8 (help2man, at build time)
#   PREFIX/lib/systemd/system/{agiled,agile-memd}.service (paths filled in at install time)
#   /etc/agile/{agiled,agile-memd}.conf for PREFIX /usr, else PREFIX/etc/agile/ (examples)
include(GNUInstallDirs)  # CMAKE_INSTALL_MANDIR

install(TARGETS agiled agilectl agile-memd agile-qemu RUNTIME DESTINATION bin)
install(TARGETS agile-shim LIBRARY DESTINATION lib/agile)
install(FILES ${CMAKE_BINARY_DIR}/guest/vmlinuz ${CMAKE_BINARY_DIR}/guest/initrd.img
        DESTINATION share/agile/guest OPTIONAL)

# Where the config goes is decided at install time, like the prefix: /etc for
# PREFIX /usr, PREFIX/etc otherwise (agiled reads /etc/agile/agiled.conf by
# default; the units name the installed file with --config).
set(AGILE_SYSCONFDIR_CODE "
  if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
    set(SYSCONFDIR /etc)
  else()
    set(SYSCONFDIR \"\${CMAKE_INSTALL_PREFIX}/etc\")
  endif()")

# Example configuration files: every setting commented out but memd's listen
# address. An existing config is kept.
foreach(conf agiled.conf agile-memd.conf)
  install(CODE "${AGILE_SYSCONFDIR_CODE}
    if(EXISTS \"\$ENV{DESTDIR}\${SYSCONFDIR}/agile/${conf}\")
      message(STATUS \"Keeping: \$ENV{DESTDIR}\${SYSCONFDIR}/agile/${conf}\")
    else()  # file(INSTALL) puts DESTDIR in front itself
      file(INSTALL \"${CMAKE_SOURCE_DIR}/etc/agile/${conf}\" DESTINATION \"\${SYSCONFDIR}/agile\")
    endif()")
endforeach()

# systemd units: ExecStart names the installed binaries, so they are filled
# in with the prefix given at install time (`cmake --install --prefix`).
set(AGILE_UNIT_DIR lib/systemd/system CACHE STRING "Where units go, relative to the install prefix")
foreach(unit agiled.service agile-memd.service)
  install(CODE "${AGILE_SYSCONFDIR_CODE}
    set(BINDIR \"\${CMAKE_INSTALL_PREFIX}/bin\")
    configure_file(\"${CMAKE_SOURCE_DIR}/contrib/systemd/${unit}.in\" \"${CMAKE_BINARY_DIR}/units/${unit}\" @ONLY)")
  install(FILES ${CMAKE_BINARY_DIR}/units/${unit} DESTINATION ${AGILE_UNIT_DIR})
endforeach()

# Man pages from each program's --help and --version (help2man), plus the
# sections in man/*.h2m. Built with everything else, so a flag added to a
# program is in its man page at the next build.
find_program(HELP2MAN help2man)
if(HELP2MAN)
  set(pages "")
  foreach(spec "agilectl;1;control agiled: start, inspect, offload and migrate VMs"
               "agiled;8;the agile host daemon: VMs whose guest memory it owns"
               "agile-memd;8;network swap store for the cold pages of agile VMs")
    list(GET spec 0 prog)
    list(GET spec 1 section)
    list(GET spec 2 what)
    set(page ${CMAKE_BINARY_DIR}/man/${prog}.${section})
    add_custom_command(OUTPUT ${page}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/man
      COMMAND ${HELP2MAN} --no-info --section=${section} --name=${what}
              --include=${CMAKE_SOURCE_DIR}/man/${prog}.h2m --output=${page} $<TARGET_FILE:${prog}>
      # agiled's defaults are relative to its binary: show where they are once installed.
      COMMAND sed -i -e "s#TEXT=[^ ]*/bin/\\.\\./lib/#TEXT=PREFIX/lib/agile/#"
              -e "s#TEXT=[^ ]*/bin/\\.\\./guest#TEXT=PREFIX/share/agile/guest#" ${page}
      DEPENDS ${prog} ${CMAKE_SOURCE_DIR}/man/${prog}.h2m
      VERBATIM)
    install(FILES ${page} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
    list(APPEND pages ${page})
  endforeach()
  add_custom_target(agile_man ALL DEPENDS ${pages})
else()
  message(WARNING "help2man not found: no man pages (scripts/install-deps installs it)")
endif()
