# Written by bocbc analyze weights; run with gnuplot in this directory.
set datafile separator ','
set terminal pngcairo size 900,540 noenhanced
set key outside right
set xlabel 'layer (weight matrices in file order)'
set grid
set output 'weights_entropy.png'
set ylabel 'spectral entropy (normalised)'
plot 'weights.csv' every ::1 using ($1 == 0 ? $3 : 1/0):7 with linespoints title 'adabelief', \
     'weights.csv' every ::1 using ($1 == 1 ? $3 : 1/0):7 with linespoints title 'adabound', \
     'weights.csv' every ::1 using ($1 == 2 ? $3 : 1/0):7 with linespoints title 'adagrad', \
     'weights.csv' every ::1 using ($1 == 3 ? $3 : 1/0):7 with linespoints title 'adamw', \
     'weights.csv' every ::1 using ($1 == 4 ? $3 : 1/0):7 with linespoints title 'adan', \
     'weights.csv' every ::1 using ($1 == 5 ? $3 : 1/0):7 with linespoints title 'lamb', \
     'weights.csv' every ::1 using ($1 == 6 ? $3 : 1/0):7 with linespoints title 'lars', \
     'weights.csv' every ::1 using ($1 == 7 ? $3 : 1/0):7 with linespoints title 'lion', \
     'weights.csv' every ::1 using ($1 == 8 ? $3 : 1/0):7 with linespoints title 'radam', \
     'weights.csv' every ::1 using ($1 == 9 ? $3 : 1/0):7 with linespoints title 'rmsprop', \
     'weights.csv' every ::1 using ($1 == 10 ? $3 : 1/0):7 with linespoints title 'sgd', \
     'weights.csv' every ::1 using ($1 == 11 ? $3 : 1/0):7 with linespoints title 'sgdp'
set output 'weights_alpha.png'
set ylabel 'power-law alpha of the eigenvalue tail'
plot 'weights.csv' every ::1 using ($1 == 0 ? $3 : 1/0):8 with linespoints title 'adabelief', \
     'weights.csv' every ::1 using ($1 == 1 ? $3 : 1/0):8 with linespoints title 'adabound', \
     'weights.csv' every ::1 using ($1 == 2 ? $3 : 1/0):8 with linespoints title 'adagrad', \
     'weights.csv' every ::1 using ($1 == 3 ? $3 : 1/0):8 with linespoints title 'adamw', \
     'weights.csv' every ::1 using ($1 == 4 ? $3 : 1/0):8 with linespoints title 'adan', \
     'weights.csv' every ::1 using ($1 == 5 ? $3 : 1/0):8 with linespoints title 'lamb', \
     'weights.csv' every ::1 using ($1 == 6 ? $3 : 1/0):8 with linespoints title 'lars', \
     'weights.csv' every ::1 using ($1 == 7 ? $3 : 1/0):8 with linespoints title 'lion', \
     'weights.csv' every ::1 using ($1 == 8 ? $3 : 1/0):8 with linespoints title 'radam', \
     'weights.csv' every ::1 using ($1 == 9 ? $3 : 1/0):8 with linespoints title 'rmsprop', \
     'weights.csv' every ::1 using ($1 == 10 ? $3 : 1/0):8 with linespoints title 'sgd', \
     'weights.csv' every ::1 using ($1 == 11 ? $3 : 1/0):8 with linespoints title 'sgdp'
